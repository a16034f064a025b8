"""The lab: the whole vfhotplug flow on real kernels under TCG, in two levels named for what they prove.

- `lab/vm_side/`, the VM side for real (was "tier C"): a q35 guest booting this machine's root, with
  containerd and vfhotplug-nri inside, and vfhotplug-host on this machine hot-plugging emulated NICs in
  place of VFs; `make demo`, most of `make lab`.
- `lab/sriov/`, real SR-IOV VFs (was "tier D"): an outer guest with QEMU's igb SR-IOV PF plays the
  physical host; vfhotplug-host and the libvirt adapters in it hot-plug real igbvf VFs into an inner guest;
  `make lab-d`.

Shared by both, here: the host-service launcher (host_service), its config writer (service_config) and
the guest-domain builder (domain).
"""
