"""The real `vfhotplug-hook` entry over the simulated guest kernel (FakeSysfsKernel), whose sysfs tree
answers driver writes as the kernel would: vfio-pci cannot bind on this machine. Only the dpdk tests'
bundles name this; everything but the sysfs adapter is the shipped entry."""

from __future__ import annotations

import sys

from oci_hooks.__main__ import main
from tests.pod.fakes import FakeSysfsKernel

if __name__ == "__main__":
    sys.exit(main(make_sysfs=FakeSysfsKernel))
