"""The guest's sysfs as the pod lifecycle sees it: PCI devices, their drivers, netdevs and IOMMU groups.

Constructed with its root so tests hand in a temporary tree; nothing here names an absolute path.
"""

from __future__ import annotations

import logging
from pathlib import Path

from contract.pci import PciAddress

log = logging.getLogger(__name__)

VFIO_DRIVER = "vfio-pci"


class SysfsError(OSError):
    """A sysfs read or write failed; the message names the file."""


class GuestSysfs:
    def __init__(self, root: Path) -> None:
        self.root = root

    def _p(self, rel: str) -> Path:
        if rel.startswith("/"):
            raise ValueError(f"sysfs path must be relative to {self.root}: {rel!r}")
        return self.root / rel

    def _dev(self, pci: PciAddress) -> str:
        return f"bus/pci/devices/{pci}"

    def write(self, rel: str, text: str) -> None:
        """Write one value, as `echo -n text > file` would; every kernel-facing write goes through here."""
        try:
            with self._p(rel).open("w") as f:
                f.write(text)
        except OSError as e:
            raise SysfsError(e.errno, f"write {text!r} to {self._p(rel)}: {e.strerror}") from e

    def device_exists(self, pci: PciAddress) -> bool:
        return self._p(self._dev(pci)).is_dir()

    def pci_devices(self) -> list[PciAddress]:
        base = self._p("bus/pci/devices")
        return sorted(PciAddress.parse(p.name) for p in base.iterdir()) if base.is_dir() else []

    def netdevs(self, pci: PciAddress) -> list[str]:
        """Netdev names of the device (the `net/` folder exists only while a netdev driver is bound)."""
        net = self._p(f"{self._dev(pci)}/net")
        try:
            return sorted(p.name for p in net.iterdir())
        except FileNotFoundError:
            return []

    def netdev_mac(self, pci: PciAddress, ifname: str) -> str | None:
        try:
            return self._p(f"{self._dev(pci)}/net/{ifname}/address").read_text().strip().lower()
        except FileNotFoundError:
            return None

    def driver(self, pci: PciAddress) -> str | None:
        link = self._p(f"{self._dev(pci)}/driver")
        return link.readlink().name if link.is_symlink() else None

    def driver_loaded(self, name: str) -> bool:
        return self._p(f"bus/pci/drivers/{name}").is_dir()

    def iommu_group(self, pci: PciAddress) -> str | None:
        """The device's node name under /dev/vfio: the group number, or `noiommu-N` without an IOMMU."""
        link = self._p(f"{self._dev(pci)}/iommu_group")
        if not link.is_symlink():
            return None
        group = link.readlink().name
        # vfio's no-IOMMU mode names its fake groups "vfio-noiommu" and their nodes noiommu-N.
        name = self._p(f"{self._dev(pci)}/iommu_group/name")
        if name.is_file() and name.read_text().strip() == "vfio-noiommu":
            return f"noiommu-{group}"
        return group

    def char_dev(self, rel: str) -> tuple[int, int] | None:
        """major:minor from a `dev` file (e.g. class/vfio/12/dev), None when absent."""
        try:
            text = self._p(rel).read_text().strip()
        except FileNotFoundError:
            return None
        major, _, minor = text.partition(":")
        return int(major), int(minor)

    def vfio_group_dev(self, group: str) -> tuple[int, int] | None:
        return self.char_dev(f"class/vfio/{group}/dev")

    def vfio_container_dev(self) -> tuple[int, int] | None:
        return self.char_dev("class/misc/vfio/dev")

    def bind_via_override(self, pci: PciAddress, driver: str | None) -> None:
        """Move the device to `driver` (None: leave it unbound) the way the kernel documents it:
        set driver_override, unbind from the current driver, ask the bus to probe."""
        current = self.driver(pci)
        if current == driver:
            return
        # An empty line clears the override, so the bus matches drivers by vendor/device again.
        self.write(f"{self._dev(pci)}/driver_override", f"{driver}\n" if driver else "\n")
        if current is not None:
            self.write(f"bus/pci/drivers/{current}/unbind", str(pci))
        if driver is not None:
            self.write("bus/pci/drivers_probe", str(pci))
        if driver != VFIO_DRIVER:
            # Only vfio-pci keeps the override, so a rescan cannot hand the VF back to a kernel driver.
            self.write(f"{self._dev(pci)}/driver_override", "\n")
        now = self.driver(pci)
        log.info("PCI %s: driver %s -> %s", pci, current, now)
        if now != driver:
            raise SysfsError(0, f"PCI {pci}: asked for driver {driver}, the kernel bound {now}")
