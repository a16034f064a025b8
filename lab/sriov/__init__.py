"""The lab on real SR-IOV VFs: an outer guest with QEMU 10's igb PF plays the physical host (run.py on this
machine boots it; check.py runs inside), where vfhotplug-host and its libvirt adapters hot-plug igbvf VFs
into an inner guest."""
