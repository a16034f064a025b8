"""The tier C lab: a q35 TCG guest booted from this machine's root with containerd and the NRI plugin inside,
hot-plug through libvirt from the host, and `make demo` / `make lab` on top (issue 7)."""
