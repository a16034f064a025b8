"""SimBackend against the real kernel: veth netdevs in a real netns, checked with `ip -j`."""

import subprocess
from pathlib import Path

from contract.pci import PciAddress
from host_side.backends.base import VfSettings, lease_alias
from host_side.backends.sim import SimBackend
from tests.pod.conftest import links, needs_root
from tests.pod.fakes import make_pool

pytestmark = needs_root
VF = make_pool("ens1f0", "0000:3b:00.0", 1)[0]


def test_attach_makes_a_netdev_and_a_pci_entry_detach_removes_both(tmp_path: Path, make_netns):
    netns = make_netns()
    sim = SimBackend(tmp_path / "sys", netns=netns)
    sim.apply_vf(VF, VfSettings(mac="02:fe:00:00:00:07", vlan=12))
    assert sim.read_vf(VF) == VfSettings(mac="02:fe:00:00:00:07", vlan=12)

    dev = sim.attach("vm1", VF, lease_alias("L1"), sim.read_vf(VF), 1.0)
    assert dev.guest_pci == PciAddress.parse("0000:10:00.0")
    netdev = links(netns)[sim.netdev_name(0x10)]
    assert netdev["address"] == "02:fe:00:00:00:07"
    assert links(netns)[sim.netdev_name(0x10) + "p"]["operstate"] == "DOWN"
    entry = tmp_path / "sys/bus/pci/devices/0000:10:00.0"
    assert (entry / "net" / sim.netdev_name(0x10)).is_dir()
    assert (entry / "driver").readlink().name == "iavf"
    assert (entry / "vendor").read_text() == "0x8086\n"
    assert (entry / "iommu_group").resolve() == (tmp_path / "sys/kernel/iommu_groups/16").resolve()

    # Idempotent by alias; a second device takes the next root-port bus.
    assert sim.attach("vm1", VF, lease_alias("L1"), sim.read_vf(VF), 1.0) == dev
    other = sim.attach("vm1", VF, lease_alias("L2"), VfSettings(mac="02:fe:00:00:00:08"), 1.0)
    assert other.guest_pci == PciAddress.parse("0000:11:00.0")

    sim.detach("vm1", lease_alias("L1"), 1.0)
    sim.detach("vm1", lease_alias("L1"), 1.0)  # already gone: no error
    assert sim.netdev_name(0x10) not in links(netns) and sim.netdev_name(0x10) + "p" not in links(netns)
    assert not entry.exists()
    assert list(sim.live_devices("vm1")) == [lease_alias("L2")]
    sim.detach("vm1", lease_alias("L2"), 1.0)


def test_state_survives_a_restart(tmp_path: Path, make_netns):
    netns = make_netns()
    first = SimBackend(tmp_path / "sys", netns=netns)
    dev = first.attach("vm1", VF, lease_alias("L9"), VfSettings(mac="02:fe:00:00:00:09"), 1.0)
    again = SimBackend(tmp_path / "sys", netns=netns)
    assert again.live_devices("vm1") == {lease_alias("L9"): dev}
    assert again.live_devices("other-vm") == {}
    again.detach("vm1", lease_alias("L9"), 1.0)
    assert again.netdev_name(0x10) not in links(netns)


def test_detach_removes_a_netdev_that_moved_to_another_netns(tmp_path: Path, make_netns):
    netns, pod = make_netns(), make_netns()
    sim = SimBackend(tmp_path / "sys", netns=netns)
    sim.attach("vm1", VF, lease_alias("L3"), VfSettings(mac="02:fe:00:00:00:03"), 1.0)
    subprocess.run(
        ["ip", "-n", Path(netns).name, "link", "set", sim.netdev_name(0x10), "netns", Path(pod).name],
        check=True,
    )
    assert sim.netdev_name(0x10) in links(pod)
    sim.detach("vm1", lease_alias("L3"), 1.0)
    assert sim.netdev_name(0x10) not in links(pod)
