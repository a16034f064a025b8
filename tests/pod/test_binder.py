"""Binder on real netns/veth (kernel mode) and on a FakeSysfsKernel tree (dpdk mode)."""

import subprocess
from dataclasses import replace
from pathlib import Path

import pytest

from contract.host_api import GrantedVf
from contract.pci import PciAddress
from host_side.backends.base import VfSettings, lease_alias
from host_side.backends.sim import SimBackend
from tests.pod.conftest import ip_json, links, needs_root
from tests.pod.fakes import VFIO_GROUP_MAJOR, FakeSysfsKernel, make_pool
from vm_side.binder import Binder, BindError
from vm_side.demand import Mode, VfSlot
from vm_side.netlink import GuestNetlink
from vm_side.pod_record import PodRecord, PodState, VfBinding

pytestmark = needs_root
VF = make_pool("ens1f0", "0000:3b:00.0", 1)[0]
MAC = "02:fe:00:00:02:01"
GPCI = PciAddress.parse("0000:10:00.0")


def setup(tmp_path: Path, netns: str, pod_netns: str, slot: VfSlot):
    sim = SimBackend(tmp_path / "sys", netns=netns)
    sim.attach("vm1", VF, lease_alias("L1"), VfSettings(mac=MAC), 1.0)
    sysfs = FakeSysfsKernel(tmp_path / "sys")
    binder = Binder(sysfs, GuestNetlink(netns))
    grant = GrantedVf("L1", "default", VF.pci, GPCI, MAC, 0, None, 0)
    vf = VfBinding(slot=slot, grant=grant, guest_pci=GPCI, guest_ifname=sim.netdev_name(0x10))
    rec = PodRecord("uid-1", "pod-1", pod_netns, PodState.PREPARING, 1, "uid-1/1", (slot,), (vf,))
    return sim, sysfs, binder, rec, vf


def test_kernel_mode_moves_renames_configures_and_undoes(tmp_path, make_netns):
    netns, pod = make_netns(), make_netns()
    slot = VfSlot(0, "default", Mode.KERNEL, "net1", ip="10.9.0.2/24", mtu=1400)
    sim, _, binder, rec, vf = setup(tmp_path, netns, pod, slot)
    vf = binder.bind(rec, binder.note_original(vf))
    assert vf.bound
    net1 = links(pod)["net1"]
    assert (net1["address"], net1["mtu"]) == (MAC, 1400)
    assert "UP" in net1["flags"]
    assert [(a["local"], a["prefixlen"]) for a in net1["addr_info"] if a["family"] == "inet"] == [
        ("10.9.0.2", 24)
    ]
    assert sim.netdev_name(0x10) not in links(netns)

    binder.unbind(rec, vf)
    binder.unbind(rec, vf)  # repeat: nothing left to do, no error
    assert "net1" not in links(pod)
    assert links(netns)[sim.netdev_name(0x10)]["address"] == MAC
    sim.detach("vm1", lease_alias("L1"), 1.0)


def test_kernel_undo_when_the_netdev_came_back_by_itself(tmp_path, make_netns):
    netns, pod = make_netns(), make_netns()
    slot = VfSlot(0, "default", Mode.KERNEL, "net1")
    sim, _, binder, rec, vf = setup(tmp_path, netns, pod, slot)
    vf = binder.bind(rec, vf)
    # What the kernel does to a physical netdev when its netns dies: back to the root netns, name kept.
    subprocess.run(["ip", "-n", Path(pod).name, "link", "set", "net1", "netns", Path(netns).name], check=True)
    subprocess.run(["ip", "netns", "del", Path(pod).name], check=True)
    binder.unbind(rec, vf)
    assert links(netns)[sim.netdev_name(0x10)]["address"] == MAC
    assert "net1" not in links(netns)
    sim.detach("vm1", lease_alias("L1"), 1.0)


def test_kernel_undo_when_netns_and_veth_are_gone(tmp_path, make_netns):
    netns, pod = make_netns(), make_netns()
    sim, _, binder, rec, vf = setup(tmp_path, netns, pod, VfSlot(0, "default", Mode.KERNEL, "net1"))
    vf = binder.bind(rec, vf)
    subprocess.run(["ip", "netns", "del", Path(pod).name], check=True)  # a veth dies with its netns
    binder.unbind(rec, vf)
    assert not [link for link in ip_json(netns, "link") if link.get("address") == MAC]
    sim.detach("vm1", lease_alias("L1"), 1.0)


def test_kernel_bind_fails_cleanly_on_a_name_taken_in_the_pod(tmp_path, make_netns):
    netns, pod = make_netns(), make_netns()
    subprocess.run(
        ["ip", "-n", Path(pod).name, "link", "add", "net1", "type", "veth", "peer", "name", "x1"], check=True
    )
    sim, _, binder, rec, vf = setup(tmp_path, netns, pod, VfSlot(0, "default", Mode.KERNEL, "net1"))
    with pytest.raises(BindError, match="net1"):
        binder.bind(rec, vf)
    binder.unbind(rec, vf)
    assert links(netns)[sim.netdev_name(0x10)]["address"] == MAC
    sim.detach("vm1", lease_alias("L1"), 1.0)


def test_dpdk_mode_binds_vfio_through_driver_override_and_back(tmp_path, make_netns):
    netns = make_netns()
    sim, sysfs, binder, rec, vf = setup(tmp_path, netns, "", VfSlot(0, "default", Mode.DPDK, "net1"))
    vf = binder.note_original(vf)
    assert vf.original_driver == "iavf"
    vf = binder.bind(rec, vf)
    dev = tmp_path / "sys/bus/pci/devices/0000:10:00.0"
    assert (dev / "driver").readlink().name == "vfio-pci"
    assert (dev / "driver_override").read_text() == "vfio-pci\n"
    assert not (dev / "net").exists()
    assert (vf.iommu_group, vf.vfio_group_dev) == ("16", (VFIO_GROUP_MAJOR, 16))
    assert ("bus/pci/drivers/iavf/unbind", "0000:10:00.0") in sysfs.writes

    binder.unbind(rec, vf)
    assert (dev / "driver").readlink().name == "iavf"
    assert (dev / "driver_override").read_text() == "(null)\n"
    assert (dev / "net" / sim.netdev_name(0x10)).is_dir()
    sim.detach("vm1", lease_alias("L1"), 1.0)


def test_dpdk_without_iommu_group_fails_and_undo_restores(tmp_path, make_netns):
    netns = make_netns()
    sim, _, binder, rec, vf = setup(tmp_path, netns, "", VfSlot(0, "default", Mode.DPDK, "net1"))
    (tmp_path / "sys/bus/pci/devices/0000:10:00.0/iommu_group").unlink()
    vf = binder.note_original(vf)
    with pytest.raises(BindError, match="kernel bound None"):
        binder.bind(rec, vf)
    binder.unbind(rec, replace(vf, bound=True))
    assert (tmp_path / "sys/bus/pci/devices/0000:10:00.0/driver").readlink().name == "iavf"
    sim.detach("vm1", lease_alias("L1"), 1.0)
