"""The outer guest (L1) as the checks see it: its igb PF and VFs, the project's adapters on them, the inner
guest (L2) they hot-plug into, and the oracles that watch both."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

from host_side.backends.base import VfRef
from host_side.backends.libvirt_hotplug import LibvirtHotplug
from host_side.backends.vf_netlink import PyrouteVfNetlink
from host_side.config import PoolConfig
from host_side.inventory import SysfsInventory
from lab.domain import GuestBoot, guest_domain
from lab.sriov.oracles import GuestOracle, Sysfs, ip_vf_view
from lab.sriov.record import Recorder
from testbed.libvirt_vm import TestVm

REPO = Path(__file__).resolve().parents[2]
BUILD = REPO / "build" / "lab-d"
URI = "qemu:///system"
L2 = "labd-l2"
POOL = "igb"
VF_IDS = "8086:10ca"  # igbvf, as the inner guest's oracle prints vendor:device
NON_VF_IDS = "8086:10d3"  # the spare e1000e run.py gives L1
LIBVIRT_TIMEOUT_S = 120.0


class L2Vm(TestVm):
    """The inner guest: the test bed's busybox guest, with igbvf in its initramfs (built by setup.sh)."""

    def domain_xml(self) -> str:
        kernel, initrd = BUILD / "vmlinux", BUILD / "l2-initramfs.cpio.gz"
        if not kernel.exists() or not initrd.exists():
            raise FileNotFoundError(f"{kernel} or {initrd} missing; run lab/sriov/setup.sh first")
        # Not quiet: kernel warnings (an RCU stall of the nested guest) land in the console log next to the
        # PCI-ADD/PCI-DEL lines, whose parser skips them. no_timer_check: the boot-time IO-APIC timer test
        # misjudges a guest this slow ("MP-BIOS bug: 8254 timer not connected") and the guest's timers
        # then stall.
        boot = GuestBoot(
            self.name,
            kernel=kernel,
            initrd=initrd,
            console_log=self.console_log,
            cmdline="console=ttyS0 loglevel=4 no_timer_check panic=-1",
        )
        return ET.tostring(guest_domain(boot), encoding="unicode")


class L1:
    """Built once per boot; every check takes it."""

    def __init__(self, pf: str, rec: Recorder, work: Path) -> None:
        self.rec = rec
        self.pf = pf
        self.work = work
        self.sysfs = Sysfs()
        self.nl = PyrouteVfNetlink()
        pool = PoolConfig(
            name=POOL, pfs=(pf,), vf_indexes=None, default_vlan=0, allow_trust=True,
            allow_spoofchk_off=True, max_per_vm=0, warm_spares=0,
        )  # fmt: skip
        self.inventory = SysfsInventory(Path("/sys"), [pool]).scan()
        self.vfs = sorted((info.ref for info in self.inventory.vfs), key=lambda ref: ref.index)
        self.vm = L2Vm(L2, run_dir=work)
        self.guest = GuestOracle(self.vm)
        self._phase_counts: dict[str, int] = {}
        self.ifhd = LibvirtHotplug(URI, mode="interface-hostdev", observe=self._observer("interface-hostdev"))
        self.hostdev = LibvirtHotplug(URI, mode="hostdev", observe=self._observer("hostdev"))

    def _observer(self, mode: str) -> Callable[[str, float], None]:
        def observe(phase: str, seconds: float) -> None:
            n = self._phase_counts.get(f"{mode}.{phase}", 0) + 1
            self._phase_counts[f"{mode}.{phase}"] = n
            self.rec.time(f"{mode}.{phase}.{n}", seconds)

        return observe

    def pf_view(self, vf: VfRef) -> dict[str, Any]:
        """The VF's settings through our netlink adapter and through iproute2."""
        return {"netlink": asdict(self.nl.read_vf(vf)), "ip": ip_vf_view(self.pf, vf.index)}

    def live_aliases(self) -> list[str]:
        return sorted(self.ifhd.live_devices(L2))

    def close(self) -> None:
        self.vm.destroy()
        self.ifhd.close()
        self.hostdev.close()
