"""vfhotplug-nri with one adapter swapped for a named fake: FakeSysfsKernel, because this kernel has no
vfio-pci for dpdk mode to bind to. Everything else is the production plugin (`nri_plugin.__main__`)."""

from __future__ import annotations

import sys
from pathlib import Path

from nri_plugin.__main__ import main
from tests.pod.fakes import FakeSysfsKernel
from vm_side import config as plugin_config


def run() -> int:
    args = sys.argv[1:]
    cfg = plugin_config.load(Path(args[args.index("--config") + 1]))
    return main(args, sysfs=FakeSysfsKernel(cfg.sysfs_root))


if __name__ == "__main__":
    sys.exit(run())
