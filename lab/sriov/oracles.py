"""The check's independent oracles in L1: PCI facts from sysfs, VF settings as iproute2 reports them, the
inner guest's own PCI-ADD/PCI-DEL lines, and what a host-side call refused with."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import libvirt

from contract.errors import HostSideError
from contract.pci import PciAddress
from testbed.libvirt_vm import GuestPciEvent, TestVm

# Nested TCG is slow: the inner guest polls PCI every 0.2 s but one poll can take seconds.
# Generous: on a machine shared with other TCG guests one step can take ten times its usual time.
GUEST_TIMEOUT_S = 180.0


class Sysfs:
    """PCI facts the check reads as its oracle (a device's driver and ids), under `root`; VF discovery is
    the project's own SysfsInventory."""

    def __init__(self, root: Path = Path("/sys")) -> None:
        self._root = root

    def _dev(self, pci: PciAddress) -> Path:
        return self._root / "bus/pci/devices" / str(pci)

    def driver(self, pci: PciAddress) -> str | None:
        link = self._dev(pci) / "driver"
        return link.readlink().name if link.exists() else None

    def ids(self, pci: PciAddress) -> str:
        dev = self._dev(pci)
        return ":".join((dev / f).read_text().strip().removeprefix("0x") for f in ("vendor", "device"))

    def find(self, ids: str) -> PciAddress | None:
        for dev in sorted((self._root / "bus/pci/devices").iterdir()):
            pci = PciAddress.parse(dev.name)
            if self.ids(pci) == ids:
                return pci
        return None


def ip_vf_view(pf: str, index: int) -> dict[str, Any]:
    """VF `index` of `pf` as iproute2 reports it: the independent oracle for what netlink set."""
    proc = subprocess.run(
        ["ip", "-j", "-d", "link", "show", "dev", pf], capture_output=True, text=True, check=True
    )
    for vf in json.loads(proc.stdout)[0].get("vfinfo_list", []):
        if vf["vf"] == index:
            vlan = (vf.get("vlan_list") or [{}])[0]
            return {
                "mac": vf.get("address"),
                "vlan": vlan.get("vlan", 0),
                "qos": vlan.get("qos", 0),
                "spoofchk": vf.get("spoofchk"),
                "trust": vf.get("trust"),
                "max_tx_rate": vf.get("rate", {}).get("max_tx", 0),
            }
    raise LookupError(f"ip link show {pf} lists no VF {index}")


def failure_of(fn: Callable[[], object]) -> dict[str, Any]:
    """Runs `fn`, expecting a host-side error; returns its class, the libvirt code behind it and message."""
    try:
        fn()
    except HostSideError as e:
        cause = e.__cause__
        code = cause.get_error_code() if isinstance(cause, libvirt.libvirtError) else None
        return {"raised": type(e).__name__, "libvirt_code": code, "message": str(e)}
    return {"raised": None, "libvirt_code": None, "message": ""}


class GuestOracle:
    """Waits for the inner guest's PCI-ADD/PCI-DEL lines that appear after a mark."""

    def __init__(self, vm: TestVm) -> None:
        self._vm = vm
        self._mark = 0

    def mark(self) -> None:
        self._mark = len(self._vm.pci_events())

    def wait(
        self, kind: str, match: Callable[[GuestPciEvent], bool], what: str
    ) -> tuple[GuestPciEvent, float]:
        t0 = time.monotonic()
        while time.monotonic() - t0 < GUEST_TIMEOUT_S:
            for event in self._vm.pci_events()[self._mark :]:
                if event.kind == kind and match(event):
                    return event, time.monotonic() - t0
            time.sleep(0.1)
        raise TimeoutError(f"inner guest showed no {what} within {GUEST_TIMEOUT_S} s")

    def wait_added_vf(self, vf_ids: str, where: str | None) -> tuple[GuestPciEvent, float]:
        """The PCI-ADD of a VF at the address libvirt gave it: with two VFs plugged, one guest scan may
        report both, and the other VF's line must not be taken for this one."""
        return self.wait(
            "add",
            lambda e: e.vendor_device == vf_ids and (where is None or e.bdf == where),
            f"PCI-ADD of {vf_ids} at {where}",
        )
