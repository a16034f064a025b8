"""The VFs of the configured PFs, read from sysfs under an injectable root.

Layout read (all relative to the root, which is `/sys` in production):
  class/net/<pf>/device                      -> the PF's PCI device (for PFs named by netdev)
  bus/pci/devices/<pf>/sriov_numvfs          how many VFs the PF has now
  bus/pci/devices/<pf>/virtfn<N>             -> the VF's PCI device
  bus/pci/devices/<vf>/numa_node             -1 when the platform has no NUMA information
  bus/pci/devices/<vf>/iommu_group           -> kernel/iommu_groups/<G> (absent without an IOMMU)
  bus/pci/devices/<vf>/driver                -> bus/pci/drivers/<name> (absent when unbound)
  bus/pci/devices/<vf>/net/<ifname>/operstate
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from contract.errors import ConfigError
from contract.pci import PciAddress
from host_side.backends.base import VfRef
from host_side.config import PoolConfig

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class VfInfo:
    pool: str
    ref: VfRef
    netdev: str | None  # None when the VF's driver is not a netdev driver (vfio-pci) or unbound
    numa: int | None
    iommu_group: int | None
    iommu_group_size: int  # devices in the VF's IOMMU group (1: it can be passed through alone)
    driver: str | None
    link: str | None  # operstate of the VF netdev


@dataclass(frozen=True)
class Inventory:
    vfs: tuple[VfInfo, ...]
    missing_pfs: tuple[str, ...]  # configured PFs not found (logged; their pool is smaller)
    fingerprint: tuple[tuple[str, str], ...]  # what a rescan compares to decide that something changed


class SysfsInventory:
    """Reads PFs and VFs below `root`; `scan_if_changed` re-reads when VF counts or drivers change."""

    def __init__(self, root: Path, pools: Sequence[PoolConfig]) -> None:
        self._root = root
        self._pools = tuple(pools)
        self._last: Inventory | None = None

    def _dev(self, pci: str) -> Path:
        return self._root / "bus/pci/devices" / pci

    def _read(self, path: Path) -> str | None:
        try:
            return path.read_text().strip()
        except OSError:
            return None

    def _link_name(self, path: Path) -> str | None:
        try:
            return path.readlink().name
        except OSError:
            return None

    def _pf_pci(self, pf: str) -> PciAddress | None:
        if ":" in pf:
            pci = PciAddress.parse(pf)
            return pci if self._dev(str(pci)).is_dir() else None
        name = self._link_name(self._root / "class/net" / pf / "device")
        if not name:
            return None
        try:
            return PciAddress.parse(name)
        except ValueError:
            # e.g. a virtio NIC: its device link names "virtioN", not a PCI function
            raise ConfigError(
                f"PF {pf!r} is not a PCI network device (its device is {name!r}); name an SR-IOV PF "
                "by netdev or PCI address in [pools.*] pfs"
            ) from None

    def _pf_netdev(self, pf: str, pci: PciAddress) -> str:
        if ":" not in pf:
            return pf
        names = sorted(p.name for p in (self._dev(str(pci)) / "net").glob("*"))
        return names[0] if names else str(pci)

    def _virtfns(self, pf_pci: PciAddress) -> dict[int, PciAddress]:
        out: dict[int, PciAddress] = {}
        for link in self._dev(str(pf_pci)).glob("virtfn*"):
            index = link.name.removeprefix("virtfn")
            target = self._link_name(link)
            if index.isdigit() and target:
                out[int(index)] = PciAddress.parse(target)
        return out

    def _fingerprint(self) -> tuple[tuple[str, str], ...]:
        """Cheap to read: per PF its VF count, per VF its driver."""
        parts: list[tuple[str, str]] = []
        for pool in self._pools:
            for pf in pool.pfs:
                pci = self._pf_pci(pf)
                if pci is None:
                    parts.append((pf, "missing"))
                    continue
                parts.append((pf, self._read(self._dev(str(pci)) / "sriov_numvfs") or "?"))
                for index, vf in sorted(self._virtfns(pci).items()):
                    parts.append((f"{pf}/{index}", self._link_name(self._dev(str(vf)) / "driver") or "-"))
        return tuple(parts)

    def _vf(self, pool: PoolConfig, pf: str, pf_pci: PciAddress, index: int, pci: PciAddress) -> VfInfo:
        dev = self._dev(str(pci))
        group_name = self._link_name(dev / "iommu_group")
        group = int(group_name) if group_name and group_name.isdigit() else None
        group_size = 1
        if group is not None:
            members = self._root / "kernel/iommu_groups" / str(group) / "devices"
            group_size = max(1, len(list(members.glob("*"))))
        numa_text = self._read(dev / "numa_node")
        numa = int(numa_text) if numa_text and numa_text.lstrip("-").isdigit() else None
        netdevs = sorted(p.name for p in (dev / "net").glob("*"))
        netdev = netdevs[0] if netdevs else None
        return VfInfo(
            pool=pool.name,
            ref=VfRef(pf=self._pf_netdev(pf, pf_pci), pf_pci=pf_pci, index=index, pci=pci),
            netdev=netdev,
            numa=numa if numa is not None and numa >= 0 else None,
            iommu_group=group,
            iommu_group_size=group_size,
            driver=self._link_name(dev / "driver"),
            link=self._read(dev / "net" / netdev / "operstate") if netdev else None,
        )

    def scan(self) -> Inventory:
        vfs: list[VfInfo] = []
        missing: list[str] = []
        seen: dict[PciAddress, str] = {}
        for pool in self._pools:
            for pf in pool.pfs:
                pf_pci = self._pf_pci(pf)
                if pf_pci is None:
                    log.warning(
                        "pool %s: PF %s not found under %s; its VFs are left out", pool.name, pf, self._root
                    )
                    missing.append(pf)
                    continue
                for index, pci in sorted(self._virtfns(pf_pci).items()):
                    if pool.vf_indexes is not None and index not in pool.vf_indexes:
                        continue
                    if pci in seen:
                        log.warning(
                            "VF %s is in pools %s and %s; kept in %s", pci, seen[pci], pool.name, seen[pci]
                        )
                        continue
                    seen[pci] = pool.name
                    vfs.append(self._vf(pool, pf, pf_pci, index, pci))
        self._last = Inventory(tuple(vfs), tuple(missing), self._fingerprint())
        return self._last

    def scan_if_changed(self) -> Inventory | None:
        """A fresh inventory when sriov_numvfs or a VF driver changed since the last scan, else None."""
        if self._last is not None and self._fingerprint() == self._last.fingerprint:
            return None
        return self.scan()
