"""kill -9 of the real service right after each state transition, restart, reconcile, retry."""

from __future__ import annotations

import json
import signal
import time
from collections import Counter
from pathlib import Path

import pytest

from contract.crash_points import CRASH_ENV
from contract.host_api import HostCallError, VfRequest
from host_side.api.client import HostClient
from host_side.backends.base import lease_alias
from testbed.waiting import free_port
from tests.host.conftest import VMS, Pki, build_sysfs, write_config
from tests.host.fake_service import launch


def check_consistent(tmp: Path, admin: HostClient) -> None:
    """Every lease is settled, every plugged device has exactly one attached lease, no VF is plugged twice,
    and every free VF carries its original settings."""
    deadline = time.monotonic() + 10
    # The warm-pool refill runs beside the API once the service answers: wait until it is done.
    leases = admin.list_leases()
    while {le.state for le in leases} - {"attached", "warm"}:
        assert time.monotonic() < deadline, f"leases not settled: {leases}"
        time.sleep(0.05)
        leases = admin.list_leases()
    domains = json.loads((tmp / "fake/libvirt.json").read_text())
    plugged = [(dom, alias, dev["vf"]) for dom, d in domains.items() for alias, dev in d["devices"].items()]
    assert all(n == 1 for n in Counter(vf for _, _, vf in plugged).values()), plugged
    assert sorted((f"dom-{le.vm}", lease_alias(le.lease_id), le.host_pci) for le in leases) == sorted(plugged)
    held = {le.host_pci for le in leases}
    netlink = (
        json.loads((tmp / "fake/netlink.json").read_text()) if (tmp / "fake/netlink.json").exists() else {}
    )
    for pci, settings in netlink.items():
        if pci not in held:
            assert settings["mac"] == "00:00:00:00:00:00", f"free VF {pci} kept MAC {settings['mac']}"


# Attach of 2 VFs commits reserved x2, attaching, attached, attaching, attached, then the answer;
# Release commits detaching, free, detaching, free, then its answer.
# With warm spares, the first VF comes from a spare ("claimed").
@pytest.mark.parametrize(
    "crash_after", ["reserved", "attaching", "attached", "answered", "detaching", "free", "claimed"]
)
def test_kill_after_each_transition_then_restart_reconciles_and_retries_answer_the_same(
    short_tmp: Path, lab_pki: Pki, crash_after: str
):
    tmp = short_tmp
    build_sysfs(tmp / "sys")
    warm = 1 if crash_after == "claimed" else 0
    cfg_path = write_config(tmp, pki_dir=lab_pki.folder, port=free_port(), warm=warm)
    cfg_text = cfg_path.read_text()
    port = int(cfg_text.split('tcp = "127.0.0.1:')[1].split('"')[0])
    cert, key = lab_pki.pair("vm-a")
    admin_sock = tmp / "run/admin.sock"
    in_release = crash_after in ("detaching", "free")

    def client() -> HostClient:
        return HostClient(f"127.0.0.1:{port}", ca=lab_pki.folder / "ca.pem", cert=cert, key=key)

    proc = launch(cfg_path, tmp / "fake", env={CRASH_ENV: crash_after})
    with HostClient.unix(admin_sock) as admin:  # the first refill runs once the service answers
        deadline = time.monotonic() + 10
        while sum(le.state == "warm" for le in admin.list_leases()) < warm * len(VMS):
            assert time.monotonic() < deadline, "warm spares were not plugged"
            time.sleep(0.05)
    first = None
    with client() as c:
        try:
            first = c.attach("uid-1", "web-0", [VfRequest("net", count=2)], "attach-1", timeout_s=10)
            assert in_release, "the attach should have crashed the service"
            c.release("uid-1", "release-1", timeout_s=10)
            pytest.fail("the release should have crashed the service")
        except HostCallError as e:
            assert e.code == "UNAVAILABLE", e
    assert proc.wait(timeout=10) == -signal.SIGKILL

    proc = launch(cfg_path, tmp / "fake")  # start-up reconcile runs before the service answers
    try:
        with HostClient.unix(admin_sock) as admin:
            check_consistent(tmp, admin)
        with client() as c:
            again = c.attach("uid-1", "web-0", [VfRequest("net", count=2)], "attach-1", timeout_s=10)
            assert len(again) == 2 and len({v.host_pci for v in again}) == 2
            if first is not None:
                assert again == first  # answered before the crash: the stored answer
            assert c.attach("uid-1", "web-0", [VfRequest("net", count=2)], "attach-1", timeout_s=10) == again
            with HostClient.unix(admin_sock) as admin:
                check_consistent(tmp, admin)
                held = {le.lease_id for le in admin.list_leases() if le.state != "warm"}
                # Until the release: the leases of the answer. A crash inside the release: reconcile has
                # finished what the release started (the device left), the rest is still held.
                assert (
                    held <= {v.lease_id for v in again} if in_release else held == {v.lease_id for v in again}
                )
            c.release("uid-1", "release-1", timeout_s=10)
            c.release("uid-1", "release-1", timeout_s=10)
            with HostClient.unix(admin_sock) as admin:
                check_consistent(tmp, admin)
                assert [le for le in admin.list_leases() if le.state != "warm"] == []
                vfs = admin.health().vfs
                assert vfs[("net", "free")] + vfs.get(("net", "warm"), 0) == 16
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=15) == 0
