"""The VM's life on the host, on the real libvirtd + QEMU (TCG): the service acts on libvirt's lifecycle,
reboot and close events, not on its periodic reconcile (set to an hour here, as is the warm refill).

Each test boots its own persistent guest (defined, on_reboot=restart so a reset reboots it) and checks
the lease table over the admin API, the VF settings the service applied, the live XML and the guest's
own PCI lines. Waits poll with a timeout; nothing sleeps for an event.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import libvirt
import pytest

from contract.host_api import VfRequest
from contract.pci import PciAddress
from host_side.api.client import HostClient
from host_side.api.wire import LeaseInfo
from host_side.backends.base import VfRef, lease_alias
from host_side.backends.libvirt_xml import plugged_devices
from host_side.backends.select import EmulatedNicSettings
from testbed.libvirt_vm import TestVm
from testbed.waiting import eventually
from tests.host_libvirt.conftest import REPO
from tests.host_libvirt.test_service_real import host_service

pytestmark = pytest.mark.libvirt

ONLY_EVENTS = "reconcile_interval_s = 3600\nwarm_refill_interval_s = 3600"
UNSET_MAC = "00:00:00:00:00:00"  # what EmulatedNicSettings reports for a VF nobody configured
WAIT_S = 30.0


class LifeVm(TestVm):
    """A persistent test guest whose guest reset reboots it (the shared guest is destroyed instead)."""

    __test__ = False

    def __init__(
        self, name: str, *, run_dir: Path, uri: str, libvirt_run: Path = Path("/run/libvirt")
    ) -> None:
        super().__init__(name, run_dir=run_dir, uri=uri)
        self._libvirt_run = libvirt_run

    def domain_xml(self) -> str:
        return (
            super().domain_xml().replace("<on_reboot>destroy</on_reboot>", "<on_reboot>restart</on_reboot>")
        )

    def start(self, boot_timeout_s: float = 60.0) -> float:
        self.domain_conn().defineXML(self.domain_xml())
        return self.boot(boot_timeout_s)

    def domain_conn(self) -> libvirt.virConnect:
        return self._connection()

    def boot(self, boot_timeout_s: float = 60.0) -> float:
        self.console_log.parent.mkdir(parents=True, exist_ok=True)
        self.console_log.unlink(missing_ok=True)
        self.domain.create()
        text = self.wait_for_console(lambda t: self.ready_marker in t, boot_timeout_s, self.ready_marker)
        return float(len(text))

    def live_aliases(self) -> set[str]:
        return set(plugged_devices(self.domain.XMLDesc(0)))

    def qemu_pid(self) -> int:
        return int((self._libvirt_run / "qemu" / f"{self.name}.pid").read_text().strip())

    def remove(self) -> None:
        try:
            dom = self.domain
            if dom.isActive():
                dom.destroy()
            dom.undefine()
        except libvirt.libvirtError as e:
            if e.get_error_code() != libvirt.VIR_ERR_NO_DOMAIN:
                raise


@pytest.fixture
def life_vm(libvirtd: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LifeVm]:
    guest = LifeVm(f"vfhp-life-{uuid.uuid4().hex[:8]}", run_dir=tmp_path_factory.mktemp("life"), uri=libvirtd)
    guest.start()
    yield guest
    guest.remove()


def vm_leases(admin: HostClient) -> list[LeaseInfo]:
    return [le for le in admin.list_leases() if le.vm == "vm-a"]


def settings_of(settings: EmulatedNicSettings, le: LeaseInfo) -> str:
    pci = PciAddress.parse(le.host_pci)
    return settings.read_vf(VfRef(le.pf, pci, le.vf_index, pci)).mac


def assert_freed_and_restored(
    admin: HostClient, settings: EmulatedNicSettings, held: list[LeaseInfo]
) -> None:
    eventually(lambda: vm_leases(admin) == [], WAIT_S, "every lease of the stopped VM freed")
    for le in held:
        assert settings_of(settings, le) == UNSET_MAC, f"VF {le.host_pci} kept the lease's settings"


def attach_one(client: HostClient, vm: LifeVm, name: str, count: int = 1) -> None:
    uid = str(uuid.uuid4())
    granted = client.attach(uid, f"default/{name}", [VfRequest(pool="net", count=count)], f"{uid}/1", 30)
    for vf in granted:
        assert vf.guest_pci is not None
        vm.wait_for_device(str(vf.guest_pci), vf.mac, WAIT_S)


def test_destroyed_vm_is_freed_at_once_and_started_again_gets_fresh_spares(
    life_vm: LifeVm, libvirtd: str, short_tmp: Path
) -> None:
    settings = EmulatedNicSettings()
    with host_service(
        short_tmp,
        life_vm,
        libvirtd,
        mode="emulated-nic",
        settings=settings,
        pool_extra="warm_spares = 1",
        timeouts_extra=ONLY_EVENTS,
    ) as (client, admin):
        eventually(lambda: [le.state for le in vm_leases(admin)] == ["warm"], WAIT_S, "one warm spare")
        [old_spare] = vm_leases(admin)
        uid = str(uuid.uuid4())
        client.attach(uid, "default/life", [VfRequest(pool="net", count=2)], f"{uid}/1", 30)
        # The pod took the spare and one cold VF; with the refill an hour away no new spare comes.
        held = vm_leases(admin)
        assert [le.state for le in held] == ["attached", "attached"]
        assert old_spare.lease_id in {le.lease_id for le in held}
        for le in held:
            assert settings_of(settings, le) == le.mac
        life_vm.domain.destroy()
        assert_freed_and_restored(admin, settings, held)
        life_vm.boot()
        # Started again: a new spare, plugged into the new run, none of the old run's leases.
        eventually(lambda: [le.state for le in vm_leases(admin)] == ["warm"], WAIT_S, "a fresh warm spare")
        [spare] = vm_leases(admin)
        assert spare.lease_id not in {le.lease_id for le in held}
        assert life_vm.live_aliases() == {lease_alias(spare.lease_id)}
        assert spare.guest_pci is not None
        life_vm.wait_for_device(spare.guest_pci, spare.mac, WAIT_S)


def test_crashed_vm_is_freed_at_once(life_vm: LifeVm, libvirtd: str, short_tmp: Path) -> None:
    settings = EmulatedNicSettings()
    with host_service(
        short_tmp, life_vm, libvirtd, mode="emulated-nic", settings=settings, timeouts_extra=ONLY_EVENTS
    ) as (client, admin):
        attach_one(client, life_vm, "crash")
        held = vm_leases(admin)
        assert [le.state for le in held] == ["attached"]
        os.kill(life_vm.qemu_pid(), signal.SIGKILL)  # QEMU dies under libvirt: STOPPED, detail failed
        assert_freed_and_restored(admin, settings, held)
        assert life_vm.domain.isActive() == 0


def test_undefined_running_vm_keeps_its_leases_until_it_stops(
    life_vm: LifeVm, libvirtd: str, short_tmp: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="host_side.vm_watch")
    settings = EmulatedNicSettings()
    with host_service(
        short_tmp, life_vm, libvirtd, mode="emulated-nic", settings=settings, timeouts_extra=ONLY_EVENTS
    ) as (client, admin):
        attach_one(client, life_vm, "undef")
        held = vm_leases(admin)
        life_vm.domain.undefine()  # still running, now transient: its devices stay in it

        def handled() -> bool:
            return any(
                "undefined" in r.getMessage() and life_vm.name in r.getMessage() for r in caplog.records
            )

        eventually(handled, WAIT_S, "the UNDEFINED event acted on")
        assert [le.state for le in vm_leases(admin)] == ["attached"]
        assert life_vm.live_aliases() == {lease_alias(held[0].lease_id)}
        life_vm.domain.destroy()  # a transient domain that stops is gone
        assert_freed_and_restored(admin, settings, held)


def test_reboot_keeps_live_devices_and_checks_them_against_the_leases(
    life_vm: LifeVm, libvirtd: str, short_tmp: Path
) -> None:
    settings = EmulatedNicSettings()
    with host_service(
        short_tmp, life_vm, libvirtd, mode="emulated-nic", settings=settings, timeouts_extra=ONLY_EVENTS
    ) as (client, admin):
        attach_one(client, life_vm, "reboot", count=2)
        kept, lost = vm_leases(admin)
        # One device leaves behind the service's back; only the reboot's check may notice it.
        life_vm.domain.detachDeviceAlias(lease_alias(lost.lease_id), libvirt.VIR_DOMAIN_AFFECT_LIVE)
        eventually(lambda: life_vm.live_aliases() == {lease_alias(kept.lease_id)}, WAIT_S, "device gone")
        assert len(vm_leases(admin)) == 2
        life_vm.domain.reset()
        eventually(lambda: [le.lease_id for le in vm_leases(admin)] == [kept.lease_id], WAIT_S, "lost freed")
        assert settings_of(settings, lost) == UNSET_MAC
        assert settings_of(settings, kept) == kept.mac
        assert life_vm.live_aliases() == {lease_alias(kept.lease_id)}
        # The rebooted guest enumerates the kept device again.
        text = life_vm.wait_for_console(lambda t: t.count("BOOTED") == 2, WAIT_S, "second BOOTED")
        assert f"PCI-ADD {kept.guest_pci}" in text.split("BOOTED", 1)[1]


@dataclass(frozen=True)
class PrivateLibvirtd:
    """A libvirtd of this test's own (testbed/libvirt/start.sh --private), so restarting it disturbs no
    one else's guests; its /run/libvirt is `folder`/run."""

    folder: Path

    @property
    def uri(self) -> str:
        return f"qemu+unix:///system?socket={self.folder}/run/libvirt-sock"

    def pid(self) -> int:
        return int((self.folder / "libvirtd.pid").read_text().strip())

    def start(self) -> None:
        subprocess.run(
            ["bash", str(REPO / "testbed/libvirt/start.sh"), "--private", str(self.folder)], check=True
        )

    def stop(self) -> None:
        # By its pid, not stop.sh: that would also put back /dev/kvm under the shared libvirtd's guests.
        pid = self.pid()
        os.kill(pid, signal.SIGTERM)
        eventually(lambda: not _alive(pid), WAIT_S, f"private libvirtd {pid} stopped")


@pytest.fixture
def private_libvirtd(libvirtd: str) -> Iterator[PrivateLibvirtd]:
    daemon = PrivateLibvirtd(Path(tempfile.mkdtemp(prefix="vfh-plv-")))  # the socket path must be short
    daemon.start()
    try:
        yield daemon
    finally:
        daemon.stop()
        shutil.rmtree(daemon.folder, ignore_errors=True)


def test_libvirtd_restart_reconnects_reconciles_and_keeps_watching(
    private_libvirtd: PrivateLibvirtd, short_tmp: Path
) -> None:
    daemon = private_libvirtd
    guest = LifeVm(
        f"vfhp-life-{uuid.uuid4().hex[:8]}",
        run_dir=short_tmp / "guest",
        uri=daemon.uri,
        libvirt_run=daemon.folder / "run",
    )
    guest.start()
    settings = EmulatedNicSettings()
    try:
        with host_service(
            short_tmp, guest, daemon.uri, mode="emulated-nic", settings=settings, timeouts_extra=ONLY_EVENTS
        ) as (client, admin):
            attach_one(client, guest, "before")
            held = vm_leases(admin)
            qemu = guest.qemu_pid()
            daemon.stop()
            # The VM dies while libvirtd is away: no event can tell the service, only the reconcile that
            # follows its reconnect.
            os.kill(qemu, signal.SIGKILL)
            eventually(lambda: not _alive(qemu), WAIT_S, "QEMU gone")
            daemon.start()
            assert_freed_and_restored(admin, settings, held)
            # The callbacks are registered on the new connection: a start and a destroy are acted on.
            guest.boot()
            attach_one(client, guest, "after")
            held = vm_leases(admin)
            guest.domain.destroy()
            assert_freed_and_restored(admin, settings, held)
    finally:
        guest.remove()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True
