"""The host service end to end on the real libvirtd + QEMU (TCG) guest: Attach/Release through gRPC over
TCP+mTLS, checked against the guest's own PCI add/remove lines on its serial console.

The VFs are emulated NICs (backend `emulated-nic`, labs/CI only): this machine has no SR-IOV NIC, so the
inventory is a sysfs-shaped tree and VF settings are recorded, not applied. Real VFs: tests/lab (tier D).
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from contract.host_api import HostCallError, VfRequest
from host_side import config, pki
from host_side.__main__ import serve
from host_side.api.client import HostClient
from host_side.backends.libvirt_hotplug import LibvirtHotplug
from host_side.backends.select import EmulatedNicSettings
from host_side.metrics import Metrics
from testbed.libvirt_vm import TestVm
from testbed.sysfs_tree import make_pf
from testbed.waiting import eventually, free_port
from tests.stack import answers_health

pytestmark = pytest.mark.libvirt


@contextmanager
def host_service(
    tmp: Path,
    vm: TestVm,
    uri: str,
    *,
    mode: str,
    settings: EmulatedNicSettings | None = None,
    pool_extra: str = "",
    timeouts_extra: str = "",
) -> Iterator[tuple[HostClient, HostClient]]:
    """The real service (in-process threads) for `vm`; yields (the VM's mTLS client, the admin client).
    `settings` records the VF settings the service applies; the extras are added to its config tables."""
    pki.init_ca(tmp / "pki")
    pki.issue(tmp / "pki", "host", server=True, sans=["127.0.0.1"])
    pki.issue(tmp / "pki", "vm-a")
    make_pf(tmp / "sys", "0000:3b:00.0", "ens1f0", 4, first_group=100)
    port = free_port()
    (tmp / "host.toml").write_text(
        f"""backend = "{"emulated-nic" if mode == "emulated-nic" else "libvirt"}"
hotplug_mode = "{mode if mode != "emulated-nic" else "interface-hostdev"}"
libvirt_uri = "{uri}"
state_dir = "state"
sysfs_root = "sys"

[listen]
tcp = "127.0.0.1:{port}"
ca = "pki/ca.pem"
cert = "pki/host.pem"
key = "pki/host.key"
admin_socket = "admin.sock"

[timeouts]
attach_s = 20
detach_s = 3
{timeouts_extra}

[pools.net]
pfs = ["ens1f0"]
{pool_extra}

[vms.vm-a]
domain = "{vm.name}"
quota = 4
"""
    )
    cfg = config.load(tmp / "host.toml")
    hotplug = LibvirtHotplug(uri, mode=mode)
    stop = threading.Event()
    runner = threading.Thread(
        target=serve, args=(cfg, hotplug, settings or EmulatedNicSettings(), Metrics(), stop), daemon=True
    )
    runner.start()
    admin = HostClient.unix(cfg.listen.admin_socket)
    eventually(lambda: answers_health(admin), 20, "the host service's admin Health")
    client = HostClient(
        f"127.0.0.1:{port}", ca=tmp / "pki/ca.pem", cert=tmp / "pki/vm-a.pem", key=tmp / "pki/vm-a.key"
    )
    try:
        yield client, admin
    finally:
        client.close()
        admin.close()
        stop.set()
        runner.join(15)
        hotplug.shutdown()


def test_attach_and_release_over_mtls_show_in_the_guest(vm: TestVm, libvirtd: str, short_tmp: Path) -> None:
    with host_service(short_tmp, vm, libvirtd, mode="emulated-nic") as (client, admin):
        uid = str(uuid.uuid4())
        granted = client.attach(uid, "default/lv-pod", [VfRequest(pool="net", count=2)], f"{uid}/1", 30)
        assert len(granted) == 2
        for vf in granted:
            assert vf.guest_pci is not None
            vm.wait_for_device(str(vf.guest_pci), vf.mac, 20)  # the guest's own PCI-ADD line, with our MAC
        assert sorted(le.state for le in admin.list_leases() if le.pod_uid == uid) == ["attached", "attached"]
        client.release(uid, f"{uid}/1/release", 30)
        for vf in granted:
            vm.wait_for_removal(str(vf.guest_pci), 20)
        assert [le for le in admin.list_leases() if le.pod_uid == uid] == []


def test_release_of_a_paused_guest_is_done_only_after_resume(
    vm: TestVm, libvirtd: str, short_tmp: Path
) -> None:
    with host_service(short_tmp, vm, libvirtd, mode="emulated-nic") as (client, admin):
        uid = str(uuid.uuid4())
        [vf] = client.attach(uid, "default/paused", [VfRequest(pool="net")], f"{uid}/1", 30)
        assert vf.guest_pci is not None
        vm.wait_for_device(str(vf.guest_pci), vf.mac, 20)
        vm.domain.suspend()
        done = threading.Event()
        errors: list[Exception] = []

        def release() -> None:
            try:
                client.release(uid, f"{uid}/1/release", 60)
            except HostCallError as e:
                errors.append(e)
            done.set()

        threading.Thread(target=release, daemon=True).start()
        # the guest cannot let go while paused: the release must not be reported done (detach_s is 3 s, so
        # the host quarantines or keeps waiting; either way not "free")
        assert not done.wait(2.0)
        vm.domain.resume()
        assert done.wait(60)
        vm.wait_for_removal(str(vf.guest_pci), 30)
        states = [le.state for le in admin.list_leases() if le.host_pci == str(vf.host_pci)]
        assert "attached" not in states


def test_hostdev_on_a_host_without_iommu_fails_clearly_and_leaves_no_lease(
    vm: TestVm, libvirtd: str, short_tmp: Path
) -> None:
    with host_service(short_tmp, vm, libvirtd, mode="hostdev") as (client, admin):
        uid = str(uuid.uuid4())
        with pytest.raises(HostCallError) as err:
            client.attach(uid, "default/noiommu", [VfRequest(pool="net")], f"{uid}/1", 30)
        assert err.value.code == "FAILED_PRECONDITION"
        assert "IOMMU" in err.value.detail
        assert [le for le in admin.list_leases() if le.pod_uid == uid] == []
