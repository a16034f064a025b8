"""The lab's VM side for real: vfhotplug-host on this machine (emulated NICs in place of VFs, through the
same libvirt code path) and containerd with vfhotplug-nri in a q35 TCG guest with an emulated IOMMU."""
