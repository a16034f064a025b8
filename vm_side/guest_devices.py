"""Wait for granted VFs to show up in the guest.

A VF is found at the guest PCI address the host reported (or, when the host did not know it, as the
PCI device whose netdev carries the lease's MAC), and confirmed by MAC where it has a netdev. Waiting is
woken by netlink link events and falls back to polling sysfs; there is no udev dependency.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass

from contract.host_api import GrantedVf
from contract.pci import PciAddress
from vm_side.netlink import GuestNetlink
from vm_side.sysfs import GuestSysfs

log = logging.getLogger(__name__)


class DeviceTimeout(TimeoutError):
    """Some VFs did not show up in time; the message names the pod, PCI address and MAC of each."""


@dataclass(frozen=True)
class FoundVf:
    lease_id: str
    guest_pci: PciAddress
    ifname: str | None  # the netdev in the guest's netns; None when no netdev driver is bound


@dataclass(frozen=True)
class Expected:
    vf: GrantedVf
    needs_netdev: bool  # kernel mode moves the netdev, so it must exist


class DeviceFinder:
    def __init__(self, sysfs: GuestSysfs, netlink: GuestNetlink, poll_interval_s: float = 0.1) -> None:
        self._sysfs = sysfs
        self._netlink = netlink
        self._poll_s = poll_interval_s

    def wait_all(self, pod: str, expected: Sequence[Expected], deadline: float) -> list[FoundVf]:
        """Found VFs in the order of `expected`, once all are there.

        `deadline` is a time.monotonic() value.

        Raises:
            DeviceTimeout: the deadline passed first.
        """
        found: dict[str, FoundVf] = {}
        why: dict[str, str] = {}
        with self._netlink.events() as events:  # armed before the first look
            while True:
                for e in expected:
                    if e.vf.lease_id not in found:
                        hit, why[e.vf.lease_id] = self._look(e)
                        if hit is not None:
                            found[e.vf.lease_id] = hit
                            log.info(
                                "pod %s: VF lease %s found at %s (netdev %s)",
                                pod,
                                hit.lease_id,
                                hit.guest_pci,
                                hit.ifname,
                            )
                if len(found) == len(expected):
                    return [found[e.vf.lease_id] for e in expected]
                left = deadline - time.monotonic()
                if left <= 0:
                    missing = "; ".join(
                        f"PCI {e.vf.guest_pci or '?'} MAC {e.vf.mac}: {why[e.vf.lease_id]}"
                        for e in expected
                        if e.vf.lease_id not in found
                    )
                    raise DeviceTimeout(
                        f"pod {pod}: VFs did not appear in the guest in time ({missing}); "
                        "check the host's hot-plug log and the guest's dmesg"
                    )
                events.wait(min(left, self._poll_s))

    def _look(self, e: Expected) -> tuple[FoundVf | None, str]:
        pci = e.vf.guest_pci
        if pci is None:
            return self._look_by_mac(e)
        if not self._sysfs.device_exists(pci):
            return None, "no such PCI device yet"
        names = self._sysfs.netdevs(pci)
        if not names:
            if e.needs_netdev:
                return None, "PCI device present, no netdev yet"
            return FoundVf(e.vf.lease_id, pci, None), ""
        # sysfs first (no netlink round trip); netlink when the tree has no address file.
        macs = {n: self._sysfs.netdev_mac(pci, n) or self._netlink.mac_of(n) for n in names}
        for name, mac in macs.items():
            if mac is not None and mac.lower() == e.vf.mac.lower():
                return FoundVf(e.vf.lease_id, pci, name), ""
        return None, f"netdev {', '.join(names)} has MAC {', '.join(str(m) for m in macs.values())}"

    def _look_by_mac(self, e: Expected) -> tuple[FoundVf | None, str]:
        name = self._netlink.find_by_mac(e.vf.mac)
        if name is None:
            return None, "no netdev with this MAC yet"
        for pci in self._sysfs.pci_devices():
            if name in self._sysfs.netdevs(pci):
                return FoundVf(e.vf.lease_id, pci, name), ""
        return None, f"netdev {name} has the MAC but belongs to no PCI device"
