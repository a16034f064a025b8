"""DeviceFinder against a real netns: VFs that arrive late, never, or with the wrong MAC."""

import threading
import time
from pathlib import Path

import pytest

from contract.host_api import GrantedVf
from contract.pci import PciAddress
from host_side.backends.base import VfSettings, lease_alias
from host_side.backends.sim import SimBackend
from tests.pod.conftest import needs_root
from tests.pod.fakes import make_pool
from vm_side.guest_devices import DeviceFinder, DeviceTimeout, Expected
from vm_side.netlink import GuestNetlink
from vm_side.sysfs import GuestSysfs

pytestmark = needs_root
VFS = make_pool("ens1f0", "0000:3b:00.0", 2)
MACS = ("02:fe:00:00:01:01", "02:fe:00:00:01:02")


def grant(i: int, guest_pci: str | None) -> GrantedVf:
    pci = PciAddress.parse(guest_pci) if guest_pci else None
    return GrantedVf(f"L{i}", "default", VFS[i].pci, pci, MACS[i], 0, None, 0)


@pytest.fixture
def sim(tmp_path: Path, make_netns):
    netns = make_netns()
    backend = SimBackend(tmp_path / "sys", netns=netns)
    finder = DeviceFinder(GuestSysfs(tmp_path / "sys"), GuestNetlink(netns), poll_interval_s=30.0)
    yield backend, finder
    for alias in backend.live_devices("vm1"):
        backend.detach("vm1", alias, 1.0)


def test_waits_for_late_devices_woken_by_link_events(sim):
    backend, finder = sim

    def plug_later():
        time.sleep(0.3)
        for i in (0, 1):
            backend.attach("vm1", VFS[i], lease_alias(f"L{i}"), VfSettings(mac=MACS[i]), 1.0)

    t = threading.Thread(target=plug_later)
    start = time.monotonic()
    t.start()
    # The second VF has no known guest address: it is found by MAC.
    found = finder.wait_all(
        "pod-a",
        [Expected(grant(0, "0000:10:00.0"), True), Expected(grant(1, None), True)],
        time.monotonic() + 20,
    )
    t.join()
    # Polling alone would wake after 30 s (past the 20 s deadline): returning shows a link event woke it.
    assert time.monotonic() - start < 15
    assert [(f.lease_id, str(f.guest_pci), f.ifname) for f in found] == [
        ("L0", "0000:10:00.0", backend.netdev_name(0x10)),
        ("L1", "0000:11:00.0", backend.netdev_name(0x11)),
    ]


def test_timeout_names_pod_pci_and_mac(sim):
    _, finder = sim
    with pytest.raises(DeviceTimeout) as err:
        finder.wait_all("pod-b", [Expected(grant(0, "0000:10:00.0"), True)], time.monotonic() + 0.3)
    assert "pod pod-b" in str(err.value)
    assert "PCI 0000:10:00.0 MAC 02:fe:00:00:01:01: no such PCI device yet" in str(err.value)


def test_wrong_mac_at_the_address_is_not_accepted(sim):
    backend, finder = sim
    backend.attach("vm1", VFS[1], lease_alias("L1"), VfSettings(mac=MACS[1]), 1.0)  # lands at 0000:10:00.0
    with pytest.raises(DeviceTimeout, match=f"netdev {backend.netdev_name(0x10)} has MAC {MACS[1]}"):
        finder.wait_all("pod-c", [Expected(grant(0, "0000:10:00.0"), True)], time.monotonic() + 0.3)
