"""Builds sysfs-shaped trees in a folder (real file names, the kernel's symlink layout): the emulated SR-IOV
PFs that tests and the lab hand to the inventory where this machine has no SR-IOV NIC."""

from __future__ import annotations

import os
from pathlib import Path

from contract.pci import PciAddress


def _link(path: Path, target: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.is_symlink():
        path.unlink()
    path.symlink_to(target)


def add_device(root: Path, pci: str, *, numa: int = -1, driver: str | None = None) -> Path:
    """devices/pci0000:00/<pci> with bus/pci/devices/<pci> pointing at it."""
    dev = root / "devices/pci0000:00" / pci
    dev.mkdir(parents=True, exist_ok=True)
    (dev / "numa_node").write_text(f"{numa}\n")
    _link(root / "bus/pci/devices" / pci, f"../../../devices/pci0000:00/{pci}")
    if driver:
        (root / "bus/pci/drivers" / driver).mkdir(parents=True, exist_ok=True)
        _link(dev / "driver", f"../../../bus/pci/drivers/{driver}")
    return dev


def add_netdev(root: Path, pci: str, ifname: str, operstate: str = "up") -> None:
    net = root / "devices/pci0000:00" / pci / "net" / ifname
    net.mkdir(parents=True, exist_ok=True)
    (net / "operstate").write_text(f"{operstate}\n")
    _link(net / "device", "../../../" + pci)
    _link(root / "class/net" / ifname, f"../../devices/pci0000:00/{pci}/net/{ifname}")


def set_iommu_group(root: Path, pci: str, group: int) -> None:
    _link(root / "devices/pci0000:00" / pci / "iommu_group", f"../../../kernel/iommu_groups/{group}")
    _link(
        root / "kernel/iommu_groups" / str(group) / "devices" / pci, f"../../../../devices/pci0000:00/{pci}"
    )


def make_pf(
    root: Path,
    pf: str,
    ifname: str,
    numvfs: int,
    *,
    numa: int = 0,
    vf_bus: int | None = None,
    first_group: int | None = None,
    vf_driver: str = "iavf",
) -> list[PciAddress]:
    """A PF with `numvfs` VFs (each with its own IOMMU group when first_group is given); returns VF PCIs."""
    pf_pci = PciAddress.parse(pf)
    add_device(root, pf, numa=numa, driver="ice")
    add_netdev(root, pf, ifname)
    bus = vf_bus if vf_bus is not None else pf_pci.bus + 1
    # 32 slots x 8 functions per bus; a PF with more VFs spreads them over the following buses.
    vfs = [PciAddress(pf_pci.domain, bus + i // 256, (i % 256) // 8, i % 8) for i in range(numvfs)]
    set_numvfs(root, pf, ifname, vfs, numa=numa, first_group=first_group, vf_driver=vf_driver)
    return vfs


def set_numvfs(
    root: Path,
    pf: str,
    ifname: str,
    vfs: list[PciAddress],
    *,
    numa: int = 0,
    first_group: int | None = None,
    vf_driver: str = "iavf",
) -> None:
    """What writing sriov_numvfs does: VF devices and virtfnN links appear (or vanish)."""
    dev = root / "devices/pci0000:00" / pf
    for old in dev.glob("virtfn*"):
        old.unlink()
    (dev / "sriov_numvfs").write_text(f"{len(vfs)}\n")
    for i, vf in enumerate(vfs):
        add_device(root, str(vf), numa=numa, driver=vf_driver)
        _link(root / "devices/pci0000:00" / str(vf) / "physfn", f"../{pf}")
        _link(dev / f"virtfn{i}", f"../{vf}")
        if vf_driver == "iavf":
            add_netdev(root, str(vf), f"{ifname}v{i}")
        if first_group is not None:
            set_iommu_group(root, str(vf), first_group + i)


def bind_driver(root: Path, pci: str, driver: str) -> None:
    """Rebinding a VF (e.g. to vfio-pci): its driver link changes and its netdev goes away."""
    dev = root / "devices/pci0000:00" / pci
    (root / "bus/pci/drivers" / driver).mkdir(parents=True, exist_ok=True)
    _link(dev / "driver", f"../../../bus/pci/drivers/{driver}")
    for net in (dev / "net").glob("*"):
        os.unlink(root / "class/net" / net.name)
        for f in net.iterdir():
            f.unlink()
        net.rmdir()
