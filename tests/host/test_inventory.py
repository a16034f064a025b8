from __future__ import annotations

from pathlib import Path

import pytest

from contract.errors import ConfigError
from contract.pci import PciAddress
from host_side.config import PoolConfig
from host_side.inventory import SysfsInventory
from testbed.sysfs_tree import add_device, bind_driver, make_pf, set_iommu_group, set_numvfs


def pool(name: str, *pfs: str, vfs: frozenset[int] | None = None) -> PoolConfig:
    return PoolConfig(name, pfs, vfs, 0, False, False, 0, 0)


def test_scan_reads_every_vf_attribute(tmp_path: Path):
    make_pf(tmp_path, "0000:3b:00.0", "ens1f0", 3, numa=1, vf_bus=0x3C, first_group=40)
    inv = SysfsInventory(tmp_path, [pool("p", "ens1f0")]).scan()
    assert [v.ref.index for v in inv.vfs] == [0, 1, 2]
    vf = inv.vfs[1]
    assert vf.ref.pf == "ens1f0" and vf.ref.pf_pci == PciAddress.parse("0000:3b:00.0")
    assert vf.ref.pci == PciAddress.parse("0000:3c:00.1")
    assert (vf.netdev, vf.numa, vf.iommu_group, vf.iommu_group_size) == ("ens1f0v1", 1, 41, 1)
    assert (vf.driver, vf.link) == ("iavf", "up")
    assert inv.missing_pfs == ()


def test_pf_by_pci_address_and_index_ranges(tmp_path: Path):
    make_pf(tmp_path, "0000:3b:00.0", "ens1f0", 4, vf_bus=0x3C)
    inv = SysfsInventory(tmp_path, [pool("p", "0000:3b:00.0", vfs=frozenset({1, 3}))]).scan()
    assert [(v.ref.pf, v.ref.index) for v in inv.vfs] == [("ens1f0", 1), ("ens1f0", 3)]
    # No IOMMU here, no NUMA information.
    assert inv.vfs[0].iommu_group is None and inv.vfs[0].numa == 0


def test_missing_pf_is_reported_and_other_pfs_still_count(tmp_path: Path):
    make_pf(tmp_path, "0000:3b:00.0", "ens1f0", 2, numa=-1, vf_bus=0x3C)
    inv = SysfsInventory(tmp_path, [pool("p", "ens9f9", "ens1f0")]).scan()
    assert inv.missing_pfs == ("ens9f9",)
    assert len(inv.vfs) == 2 and inv.vfs[0].numa is None


def test_shared_iommu_group_is_seen(tmp_path: Path):
    make_pf(tmp_path, "0000:3b:00.0", "ens1f0", 2, vf_bus=0x3C, first_group=7)
    add_device(tmp_path, "0000:3c:00.7")
    set_iommu_group(tmp_path, "0000:3c:00.7", 7)  # another device in VF 0's group
    inv = SysfsInventory(tmp_path, [pool("p", "ens1f0")]).scan()
    assert [v.iommu_group_size for v in inv.vfs] == [2, 1]


def test_rescan_follows_numvfs_and_driver_changes(tmp_path: Path):
    vfs = make_pf(tmp_path, "0000:3b:00.0", "ens1f0", 2, vf_bus=0x3C)
    inventory = SysfsInventory(tmp_path, [pool("p", "ens1f0")])
    inventory.scan()
    assert inventory.scan_if_changed() is None  # nothing changed: no re-read
    more = [*vfs, PciAddress.parse("0000:3c:00.2"), PciAddress.parse("0000:3c:00.3")]
    set_numvfs(tmp_path, "0000:3b:00.0", "ens1f0", more)
    grown = inventory.scan_if_changed()
    assert grown is not None and len(grown.vfs) == 4
    bind_driver(tmp_path, "0000:3c:00.3", "vfio-pci")
    rebound = inventory.scan_if_changed()
    assert rebound is not None
    assert (rebound.vfs[3].driver, rebound.vfs[3].netdev) == ("vfio-pci", None)
    set_numvfs(tmp_path, "0000:3b:00.0", "ens1f0", [])
    shrunk = inventory.scan_if_changed()
    assert shrunk is not None and shrunk.vfs == ()


def test_a_pf_that_is_not_a_pci_device_is_a_config_error(tmp_path: Path):
    # eth0 of a VM is a virtio device: class/net/eth0/device points at "virtio2", not a PCI function
    net = tmp_path / "devices/pci0000:00/0000:00:02.0/virtio2/net/eth0"
    net.mkdir(parents=True)
    (tmp_path / "class/net").mkdir(parents=True)
    (tmp_path / "class/net/eth0").symlink_to("../../devices/pci0000:00/0000:00:02.0/virtio2/net/eth0")
    (net / "device").symlink_to("../../../virtio2")
    with pytest.raises(ConfigError, match="'eth0' is not a PCI network device"):
        SysfsInventory(tmp_path, [pool("p", "eth0")]).scan()
