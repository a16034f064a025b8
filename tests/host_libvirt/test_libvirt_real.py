"""LibvirtHotplug against the real libvirtd 9.0 + QEMU 7.2 (TCG) guest of the tier C testbed.

The guest's own view (PCI-ADD/PCI-DEL lines its init prints on the serial console) is the oracle for
"the device really appeared / disappeared", independent of what libvirt reports.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import libvirt
import pytest

from contract.errors import BackendUnavailable, DeadlineExceeded, HostSideError, PreconditionFailed
from contract.pci import PciAddress
from host_side.backends.base import PluggedDevice, VfRef, VfSettings, lease_alias
from host_side.backends.libvirt_hotplug import LibvirtHotplug
from testbed.libvirt_vm import TestVm, domain_xml
from tests.host_libvirt.conftest import owned_libvirtd_pid, restart_libvirtd

pytestmark = pytest.mark.libvirt

# Emulated NICs ignore the VF address; hostdev modes are refused before libvirt looks at it (no IOMMU).
VF = VfRef("enp59s0f0", PciAddress.parse("0000:3b:00.0"), 0, PciAddress.parse("0000:3b:10.0"))
GUEST_TIMEOUT_S = 30.0


class Phases:
    """Collects observe() calls; `called` is set on each libvirt call so tests can order against it."""

    def __init__(self) -> None:
        self.seen: list[str] = []
        self.called = threading.Event()

    def __call__(self, phase: str, _seconds: float) -> None:
        self.seen.append(phase)
        if phase == "libvirt_call":
            self.called.set()


@pytest.fixture
def phases() -> Phases:
    return Phases()


@pytest.fixture
def hotplug(libvirtd: str, phases: Phases) -> Iterator[LibvirtHotplug]:
    hp = LibvirtHotplug(libvirtd, mode="emulated-nic", observe=phases)
    yield hp
    hp.close()


@pytest.fixture(autouse=True)
def no_leftover_devices(request: pytest.FixtureRequest) -> Iterator[None]:
    """Every test leaves the guest without our devices, so the next one starts with all ports free."""
    yield
    if "vm" not in request.fixturenames:
        return
    vm: TestVm = request.getfixturevalue("vm")
    hp = LibvirtHotplug(request.getfixturevalue("libvirtd"), mode="emulated-nic")
    try:
        for alias in hp.live_devices(vm.name):
            hp.detach(vm.name, alias, GUEST_TIMEOUT_S)
    finally:
        hp.close()


def mac_for(n: int) -> str:
    return f"52:54:00:5e:{os.getpid() % 256:02x}:{n:02x}"


@pytest.mark.parametrize("nic_model", ["e1000e", "virtio"])
def test_attach_shows_in_guest_with_lease_mac_and_detach_removes_it(
    vm: TestVm, libvirtd: str, nic_model: str
) -> None:
    phases = Phases()
    hp = LibvirtHotplug(libvirtd, mode="emulated-nic", nic_model=nic_model, observe=phases)
    alias, mac = lease_alias(f"attach-{nic_model}"), mac_for(1)

    device = hp.attach(vm.name, VF, alias, VfSettings(mac=mac), GUEST_TIMEOUT_S)

    assert device.alias == alias and device.mac == mac
    assert device.guest_pci is not None
    bdf = str(device.guest_pci)
    vm.wait_for_device(bdf, mac, GUEST_TIMEOUT_S)
    assert hp.live_devices(vm.name) == {alias: device}
    assert phases.seen == ["libvirt_call", "event_wait"]

    hp.detach(vm.name, alias, GUEST_TIMEOUT_S)

    assert hp.live_devices(vm.name) == {}
    vm.wait_for_removal(bdf, GUEST_TIMEOUT_S)
    hp.close()


def test_attach_and_detach_are_idempotent(vm: TestVm, hotplug: LibvirtHotplug, phases: Phases) -> None:
    alias = lease_alias("idem")
    first = hotplug.attach(vm.name, VF, alias, VfSettings(mac=mac_for(2)), GUEST_TIMEOUT_S)
    again = hotplug.attach(vm.name, VF, alias, VfSettings(mac=mac_for(2)), GUEST_TIMEOUT_S)
    assert again == first
    assert phases.seen.count("libvirt_call") == 1

    hotplug.detach(vm.name, alias, GUEST_TIMEOUT_S)
    hotplug.detach(vm.name, alias, GUEST_TIMEOUT_S)
    assert phases.seen.count("libvirt_call") == 2
    assert hotplug.live_devices(vm.name) == {}


def test_release_of_paused_guest_completes_only_after_resume(
    vm: TestVm, hotplug: LibvirtHotplug, phases: Phases
) -> None:
    alias = lease_alias("paused")
    device = hotplug.attach(vm.name, VF, alias, VfSettings(mac=mac_for(3)), GUEST_TIMEOUT_S)
    phases.called.clear()
    order: list[str] = []
    failures: list[BaseException] = []

    def release() -> None:
        try:
            hotplug.detach(vm.name, alias, 120.0)
            order.append("released")
        except HostSideError as e:  # reported to the test thread below
            failures.append(e)

    vm.domain.suspend()
    try:
        worker = threading.Thread(target=release)
        worker.start()
        assert phases.called.wait(GUEST_TIMEOUT_S), "detach never reached libvirt"
        # Give a wrong implementation (one trusting the returned call) time to report done; a correct one
        # cannot, whatever this pause is.
        time.sleep(1.0)
        assert alias in hotplug.live_devices(vm.name), "the paused guest must still hold the device"
        order.append("resumed")
    finally:
        vm.domain.resume()
    worker.join(GUEST_TIMEOUT_S)

    assert not failures
    assert order == ["resumed", "released"]
    assert hotplug.live_devices(vm.name) == {}
    assert device.guest_pci is not None
    bdf = str(device.guest_pci)
    vm.wait_for_removal(bdf, GUEST_TIMEOUT_S)


def test_release_timeout_of_paused_guest_raises_and_keeps_device(vm: TestVm, hotplug: LibvirtHotplug) -> None:
    alias = lease_alias("held")
    hotplug.attach(vm.name, VF, alias, VfSettings(mac=mac_for(4)), GUEST_TIMEOUT_S)
    vm.domain.suspend()
    try:
        with pytest.raises(DeadlineExceeded, match="quarantined"):
            hotplug.detach(vm.name, alias, 1.0)
        assert alias in hotplug.live_devices(vm.name)
    finally:
        vm.domain.resume()
    hotplug.detach(vm.name, alias, GUEST_TIMEOUT_S)
    assert hotplug.live_devices(vm.name) == {}


@pytest.mark.parametrize("mode", ["hostdev", "interface-hostdev"])
def test_hostdev_without_iommu_is_a_clear_precondition_error(vm: TestVm, libvirtd: str, mode: str) -> None:
    hp = LibvirtHotplug(libvirtd, mode=mode)
    with pytest.raises(PreconditionFailed, match="enable the IOMMU") as info:
        hp.attach(
            vm.name, VF, lease_alias(f"hd-{mode}"), VfSettings(mac=mac_for(5), vlan=42), GUEST_TIMEOUT_S
        )
    cause = info.value.__cause__
    assert isinstance(cause, libvirt.libvirtError)
    assert cause.get_error_code() == libvirt.VIR_ERR_CONFIG_UNSUPPORTED
    assert hp.live_devices(vm.name) == {}
    hp.close()


def test_all_root_ports_used_fails_before_calling_libvirt(
    vm: TestVm, hotplug: LibvirtHotplug, phases: Phases
) -> None:
    plugged: list[PluggedDevice] = [
        hotplug.attach(
            vm.name, VF, lease_alias(f"port-{n}"), VfSettings(mac=mac_for(10 + n)), GUEST_TIMEOUT_S
        )
        for n in range(4)
    ]
    assert sorted(d.guest_pci.bus for d in plugged if d.guest_pci) == [1, 2, 3, 4]
    for d in plugged:
        bdf, mac = str(d.guest_pci), d.mac or "-"
        vm.wait_for_device(bdf, mac, GUEST_TIMEOUT_S)
    calls = phases.seen.count("libvirt_call")

    with pytest.raises(PreconditionFailed, match="needs spare pcie-root-ports"):
        hotplug.attach(vm.name, VF, lease_alias("port-5"), VfSettings(mac=mac_for(15)), GUEST_TIMEOUT_S)
    assert phases.seen.count("libvirt_call") == calls


def test_parallel_attaches_get_distinct_root_ports(vm: TestVm, hotplug: LibvirtHotplug) -> None:
    results: dict[int, PluggedDevice] = {}
    failures: list[HostSideError] = []
    start = threading.Barrier(4)

    def attach(n: int) -> None:
        start.wait()
        try:
            alias = lease_alias(f"par-{n}")
            results[n] = hotplug.attach(vm.name, VF, alias, VfSettings(mac=mac_for(20 + n)), GUEST_TIMEOUT_S)
        except HostSideError as e:  # reported to the test thread below
            failures.append(e)

    workers = [threading.Thread(target=attach, args=(n,)) for n in range(4)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(GUEST_TIMEOUT_S)

    assert not failures
    assert sorted(d.guest_pci.bus for d in results.values() if d.guest_pci) == [1, 2, 3, 4]
    assert hotplug.live_devices(vm.name) == {d.alias: d for d in results.values()}


def test_domain_states(vm: TestVm, hotplug: LibvirtHotplug, libvirtd: str, tmp_path: Path) -> None:
    assert hotplug.domain_running(vm.name)
    assert not hotplug.domain_running("vfhp-no-such-domain")
    with pytest.raises(PreconditionFailed, match="domain name in the config"):
        hotplug.attach("vfhp-no-such-domain", VF, lease_alias("x"), VfSettings(mac=mac_for(6)), 5.0)

    conn = libvirt.open(libvirtd)
    name = f"{vm.name}-off"
    xml = domain_xml(
        name, kernel=tmp_path / "k", initrd=tmp_path / "i", console_log=tmp_path / "c", root_ports=1
    )
    conn.defineXML(xml)
    try:
        assert not hotplug.domain_running(name)
        with pytest.raises(PreconditionFailed, match="is not running; start it"):
            hotplug.attach(name, VF, lease_alias("off"), VfSettings(mac=mac_for(7)), 5.0)
        hotplug.detach(name, lease_alias("off"), 5.0)  # nothing plugged: done at once
    finally:
        conn.lookupByName(name).undefine()
        conn.close()


# Runs last in this module: it stops the shared libvirtd and starts it again.
def test_libvirtd_stopped_is_backend_unavailable_and_recovers(vm: TestVm, hotplug: LibvirtHotplug) -> None:
    pid = owned_libvirtd_pid()
    if pid is None:
        pytest.skip(
            "libvirtd was not started by testbed/libvirt/start.sh; not stopping someone else's daemon"
        )
    assert hotplug.live_devices(vm.name) == {}  # connection open before the stop
    os.kill(pid, signal.SIGTERM)
    try:
        while _alive(pid):
            time.sleep(0.05)
        with pytest.raises(BackendUnavailable, match="start libvirtd"):
            hotplug.live_devices(vm.name)
        fresh = LibvirtHotplug("qemu:///system", mode="emulated-nic")
        with pytest.raises(BackendUnavailable, match="cannot be reached"):
            fresh.attach(vm.name, VF, lease_alias("down"), VfSettings(mac=mac_for(8)), 5.0)
    finally:
        restart_libvirtd()
    # The guest kept running without libvirtd, and the same instance reconnects.
    assert hotplug.domain_running(vm.name)
    hotplug.attach(vm.name, VF, lease_alias("back"), VfSettings(mac=mac_for(9)), GUEST_TIMEOUT_S)
    hotplug.detach(vm.name, lease_alias("back"), GUEST_TIMEOUT_S)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True
