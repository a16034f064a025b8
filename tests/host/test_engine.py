from __future__ import annotations

import threading
import time

import pytest

from contract.errors import (
    BackendUnavailable,
    DeadlineExceeded,
    Exhausted,
    HostSideError,
    PermissionDenied,
    PreconditionFailed,
    UnknownPool,
)
from contract.host_api import VfRequest
from contract.pci import PciAddress
from host_side.backends.base import VfSettings, lease_alias
from host_side.leases import Lease
from testbed.sysfs_tree import set_numvfs
from tests.host.conftest import Bed, make_bed
from tests.host.fakes import (
    VIR_ERR_CONFIG_UNSUPPORTED,
    VIR_ERR_NO_SUPPORT,
    VIR_ERR_SYSTEM_ERROR,
    VIR_ERR_XML_ERROR,
    libvirt_error,
)


def later(s: float = 10.0) -> float:
    return time.monotonic() + s


def attach(bed: Bed, vm: str = "vm-a", pod: str = "pod1", rid: str = "r1", *reqs: VfRequest):
    return bed.engine.attach(bed.vm(vm), pod, f"name-{pod}", list(reqs) or [VfRequest("net")], rid, later())


def lease(bed: Bed, lease_id: str) -> Lease:
    le = bed.store.get(lease_id)
    assert le is not None, f"lease {lease_id} is gone"
    return le


def states(bed: Bed) -> dict[str, int]:
    out: dict[str, int] = {}
    for (_, state), n in bed.store.counts().items():
        out[state] = out.get(state, 0) + n
    return out


def test_attach_sets_vf_and_plugs_it_and_release_restores(bed: Bed):
    (vf,) = attach(bed, "vm-a", "pod1", "r1", VfRequest("net", vlan=42, mac="02:aa:00:00:00:01", trust=True))
    assert (vf.mac, vf.vlan, vf.pool, vf.request_index) == ("02:aa:00:00:00:01", 42, "net", 0)
    assert vf.guest_pci == PciAddress.parse("0000:01:00.0")
    # The PF holds the pod's settings for that VF, and the VF sits in vm-a's domain under the lease alias.
    settings = bed.netlink.vfs[str(vf.host_pci)]
    assert (settings.mac, settings.vlan, settings.trust) == ("02:aa:00:00:00:01", 42, True)
    assert bed.hotplug.plugged_vfs() == {str(vf.host_pci): ("dom-vm-a", lease_alias(vf.lease_id))}
    assert states(bed) == {"free": 15, "attached": 1}

    out = bed.engine.release(bed.vm("vm-a"), "pod1", [], "rel1", later())
    assert out.released == (vf.lease_id,) and out.quarantined == ()
    assert bed.hotplug.plugged_vfs() == {}
    # The VF is back to what it was before the pod: no MAC or VLAN of the previous pod.
    assert bed.netlink.vfs[str(vf.host_pci)] == VfSettings(
        mac="00:00:00:00:00:00", spoofchk=True, trust=False
    )
    assert states(bed) == {"free": 16}


def test_generated_macs_differ_and_vfs_spread_over_pfs(bed: Bed):
    vfs = attach(bed, "vm-a", "pod1", "r1", VfRequest("net", count=2), VfRequest("net", numa=1))
    assert len({v.mac for v in vfs}) == 3 and all(int(v.mac[:2], 16) & 2 for v in vfs)
    assert {v.host_pci.bus for v in vfs[:2]} == {0x3C, 0x5F}  # one per PF
    assert vfs[2].numa == 1 and vfs[2].host_pci.bus == 0x5F
    assert [v.request_index for v in vfs] == [0, 0, 1]


def test_same_request_id_returns_the_same_answer_without_new_work(bed: Bed):
    first = attach(bed, "vm-a", "pod1", "r1", VfRequest("net", count=2))
    calls = bed.hotplug.attach_calls
    assert attach(bed, "vm-a", "pod1", "r1", VfRequest("net", count=2)) == first
    assert bed.hotplug.attach_calls == calls
    # A request id is per VM: vm-b's "r1" is its own call.
    assert attach(bed, "vm-b", "pod9", "r1")[0].lease_id not in {v.lease_id for v in first}


def test_hostdev_refused_without_iommu_rolls_back_everything(bed: Bed):
    bed.hotplug.domains["dom-vm-a"].iommu = False
    with pytest.raises(PreconditionFailed, match=f"libvirt error {VIR_ERR_CONFIG_UNSUPPORTED}"):
        attach(bed, "vm-a", "pod1", "r1", VfRequest("net", count=3))
    assert states(bed) == {"free": 16}
    assert bed.engine.leases(None) == [] and bed.hotplug.plugged_vfs() == {}
    assert all(s.mac == "00:00:00:00:00:00" for s in bed.netlink.vfs.values())


def test_later_failure_gives_back_vfs_already_plugged(bed: Bed):
    d = bed.hotplug.domains["dom-vm-a"]
    d.root_ports = 2  # third device finds no free root port
    with pytest.raises(PreconditionFailed, match="spare root ports"):
        attach(bed, "vm-a", "pod1", "r1", VfRequest("net", count=3))
    assert bed.hotplug.plugged_vfs() == {} and states(bed) == {"free": 16}


@pytest.mark.parametrize(
    ("err", "expect"),
    [
        (
            libvirt_error(VIR_ERR_NO_SUPPORT, "this function is not supported by the connection driver"),
            PreconditionFailed,
        ),
        (libvirt_error(VIR_ERR_SYSTEM_ERROR, "Device 0000:3c:00.0 not found"), PreconditionFailed),
        (libvirt_error(VIR_ERR_XML_ERROR, "Invalid PCI address bus='0x1ff', must be <= 0xFF"), HostSideError),
    ],
)
def test_libvirt_refusals_pass_through_with_nothing_left(bed: Bed, err, expect):
    bed.hotplug.attach_error = err
    with pytest.raises(expect):
        attach(bed)
    assert states(bed) == {"free": 16}


def test_libvirt_lost_mid_attach_quarantines_until_libvirt_can_tell(bed: Bed):
    bed.hotplug.attach_error = BackendUnavailable("libvirt error 38: Cannot write data: Broken pipe")
    with pytest.raises(BackendUnavailable):
        attach(bed)
    (le,) = bed.engine.leases(None)
    assert le.state == "quarantined" and (le.reason or "").startswith("attach outcome unknown")
    bed.engine.reconcile()  # the device could still arrive: one attach timeout of patience
    assert lease(bed, le.lease_id).state == "quarantined"
    bed.store._db.execute("UPDATE vfs SET since = since - 60 WHERE lease_id=?", (le.lease_id,))
    bed.engine.reconcile()  # libvirt says it never came
    assert states(bed) == {"free": 16}


def test_same_vf_in_use_by_another_domain_is_refused(bed: Bed):
    (vf,) = attach(bed, "vm-a")
    bed.store.free(lease(bed, vf.lease_id))  # a store that lost track, as if by a bug
    # The same VF is chosen again (lowest index of the PF with most free) and libvirt says 55.
    with pytest.raises(PreconditionFailed, match=r"libvirt error 55: PCI device .* is in use by driver QEMU"):
        attach(bed, "vm-b", "pod2", "r2", VfRequest("net", numa=0))


def test_attach_timeout_quarantines_and_reconcile_waits_for_the_truth(bed: Bed):
    bed.hotplug.attach_hangs = True
    with pytest.raises(DeadlineExceeded):
        attach(bed)
    (le,) = bed.engine.leases(None)
    assert le.state == "quarantined" and (le.reason or "").startswith("attach outcome unknown")
    # The device did arrive late: reconcile unplugs it (a quarantined lease with its device present).
    bed.engine.reconcile()
    assert bed.hotplug.plugged_vfs() == {} and states(bed) == {"free": 16}


def test_release_while_paused_is_not_done_until_resume(bed: Bed):
    (vf,) = attach(bed)
    bed.hotplug.pause("dom-vm-a")
    out = bed.engine.release(bed.vm(), "pod1", [], "rel1", later())
    assert out.quarantined == (vf.lease_id,) and out.released == ()
    assert lease(bed, vf.lease_id).state == "quarantined"
    bed.engine.reconcile()  # still paused: the guest holds it, nothing is freed
    assert lease(bed, vf.lease_id).state == "quarantined"
    assert attach(bed, "vm-b", "p2", "x", VfRequest("net", numa=0))[0].host_pci != vf.host_pci
    bed.hotplug.resume("dom-vm-a")
    bed.engine.reconcile()
    assert bed.store.get(vf.lease_id) is None
    assert bed.netlink.vfs[str(vf.host_pci)].mac == "00:00:00:00:00:00"


def test_quota_pool_and_identity_rules(bed: Bed):
    attach(bed, "vm-a", "p1", "r1", VfRequest("net", count=3))
    with pytest.raises(Exhausted, match="quota is 4"):
        attach(bed, "vm-a", "p2", "r2", VfRequest("net", count=2))
    with pytest.raises(UnknownPool, match="pool 'nope' does not exist"):
        attach(bed, "vm-a", "p2", "r3", VfRequest("nope"))
    with pytest.raises(PermissionDenied, match="'stranger' is not a VM of this host"):
        bed.engine.vm("stranger")
    attach(bed, "vm-b", "q", "q", VfRequest("net", count=4, numa=0))
    with pytest.raises(Exhausted, match=r"has 2 usable free VF\(s\) on NUMA node 0, 4 asked"):
        attach(bed, "vm-c", "c", "c", VfRequest("net", count=4, numa=0))
    assert len(bed.engine.leases(bed.vm("vm-c"))) == 0


def test_other_vms_leases_are_invisible_and_untouchable(bed: Bed):
    (vf,) = attach(bed, "vm-a")
    assert bed.engine.leases(bed.vm("vm-b")) == []
    with pytest.raises(PermissionDenied, match="not VM vm-b's"):
        bed.engine.release(bed.vm("vm-b"), None, [vf.lease_id], "x", later())
    # Releasing "pod1" as vm-b finds nothing of vm-a's pod1.
    assert bed.engine.release(bed.vm("vm-b"), "pod1", [], "y", later()).released == ()
    assert lease(bed, vf.lease_id).state == "attached"


def test_vm_not_running_is_a_precondition(bed: Bed):
    bed.hotplug.shut_off("dom-vm-a")
    with pytest.raises(PreconditionFailed, match="not running; start it"):
        attach(bed)


def test_sync_releases_dead_pods_after_the_grace_period(bed: Bed):
    attach(bed, "vm-a", "live", "r1")
    (dead,) = attach(bed, "vm-a", "dead", "r2")
    assert bed.engine.sync(bed.vm(), ["live"], later()).released == ()  # within the grace period
    time.sleep(0.6)
    assert bed.engine.sync(bed.vm(), ["live"], later()).released == (dead.lease_id,)
    assert [le.pod_uid for le in bed.engine.leases(bed.vm())] == ["live"]


def test_reconcile_frees_leases_of_a_vanished_vm_and_skips_when_libvirt_is_down(bed: Bed):
    attach(bed, "vm-a", "p", "r")
    bed.hotplug.shut_off("dom-vm-a")
    bed.hotplug.libvirt_down = True
    bed.engine.reconcile()  # cannot ask libvirt: nothing is freed on a guess
    assert states(bed)["attached"] == 1
    bed.hotplug.libvirt_down = False
    bed.engine.reconcile()
    assert states(bed) == {"free": 16}


def test_reconcile_adopts_attaching_and_unplugs_orphans(bed: Bed):
    (vf,) = attach(bed)
    le = lease(bed, vf.lease_id)
    # As after a crash between the hot-plug and its commit: state attaching, device present.
    bed.store._db.execute("UPDATE vfs SET state='attaching', guest_pci=NULL WHERE lease_id=?", (le.lease_id,))
    bed.hotplug.domains["dom-vm-a"].devices["ua-vfhp-0rphan"] = {
        "vf": "0000:5f:00.7",
        "mac": "02:00:00:00:00:99",
        "guest_pci": "0000:07:00.0",
    }
    bed.engine.reconcile(startup=True)
    adopted = lease(bed, vf.lease_id)
    assert adopted.state == "attached" and adopted.guest_pci == vf.guest_pci
    assert list(bed.hotplug.domains["dom-vm-a"].devices) == [lease_alias(vf.lease_id)]


def test_warm_pool_refill_and_claim(tmp_path):
    bed = make_bed(tmp_path, warm=2)
    assert bed.engine.refill_warm() == 8  # 2 spares for each of 4 VMs
    assert states(bed)["warm"] == 8
    calls = bed.hotplug.attach_calls
    (vf,) = bed.engine.attach(
        bed.vm("vm-a"), "p1", "n", [VfRequest("net", vlan=9)], "c1", later(), warm_only=True
    )
    assert bed.hotplug.attach_calls == calls  # no hot-plug: the spare was already in the VM
    assert bed.netlink.vfs[str(vf.host_pci)].vlan == 9 and vf.guest_pci is not None
    with pytest.raises(Exhausted, match="no warm spare"):
        bed.engine.attach(
            bed.vm("vm-a"), "p2", "n", [VfRequest("net", count=2)], "c2", later(), warm_only=True
        )
    assert states(bed)["warm"] == 7  # the failed claim gave its spare back
    # A claim whose VF settings fail: the spare goes back with its own MAC, not the pod's.
    spare = next(le for le in bed.engine.leases(bed.vm("vm-b")) if le.pod_uid is None)
    bed.netlink.fail_apply = HostSideError("set vf 0 on ens1f0: Operation not permitted (EPERM)")
    with pytest.raises(HostSideError, match="EPERM"):
        bed.engine.attach(
            bed.vm("vm-b"), "p9", "n", [VfRequest("net", mac="02:99:00:00:00:01")], "c9", later()
        )
    back = lease(bed, spare.lease_id)
    assert back.pod_uid is None and back.desired == spare.desired
    assert bed.netlink.vfs[str(spare.vf.pci)].mac == spare.desired.mac
    assert bed.engine.refill_warm() == 1
    # Quota 4: 2 spares + p1 + a 1-VF pod, no more spares beyond the quota.
    attach(bed, "vm-a", "p3", "c3", VfRequest("net", count=2))
    assert bed.engine.refill_warm() == 1
    assert len(bed.engine.leases(bed.vm("vm-a"))) == 4
    bed.store.close()


def test_inventory_rescan_adds_vfs_without_restart(bed: Bed):
    attach(bed, "vm-b", "p", "r", VfRequest("net", count=4, numa=0))
    attach(bed, "vm-c", "p", "r", VfRequest("net", count=3, numa=0))  # 1 of 8 left on NUMA 0
    more = [PciAddress(0, 0x3C, i // 8, i % 8) for i in range(11)]
    set_numvfs(bed.cfg.sysfs_root, "0000:3b:00.0", "ens1f0", more, first_group=100)
    # An attach that finds the pool short looks at sysfs again before refusing.
    vfs = attach(bed, "vm-a", "p", "r", VfRequest("net", count=4, numa=0))
    assert len(vfs) == 4 and states(bed) == {"free": 8, "attached": 11}
    assert not bed.engine.rescan()  # nothing changed since


def test_reconcile_leaves_an_attach_in_flight_alone(bed: Bed):
    bed.hotplug.attach_gate = threading.Event()
    result: list[object] = []
    worker = threading.Thread(target=lambda: result.append(attach(bed)))
    worker.start()
    assert bed.hotplug.attach_entered.wait(5)
    (le,) = bed.engine.leases(None)
    assert le.state == "attaching"
    bed.engine.reconcile()  # the device is not in the domain yet, but a call is working on it
    assert lease(bed, le.lease_id).state == "attaching"
    bed.hotplug.attach_gate.set()
    worker.join(5)
    assert lease(bed, le.lease_id).state == "attached" and len(result) == 1


def test_a_retry_racing_its_original_waits_and_gets_the_same_answer(bed: Bed):
    bed.hotplug.attach_gate = threading.Event()
    results: list[object] = []
    threads = [threading.Thread(target=lambda: results.append(attach(bed))) for _ in range(2)]
    for t in threads:
        t.start()
    assert bed.hotplug.attach_entered.wait(5)
    bed.hotplug.attach_gate.set()
    for t in threads:
        t.join(5)
    assert len(results) == 2 and results[0] == results[1]
    assert bed.hotplug.attach_calls == 1 and len(bed.engine.leases(None)) == 1


def test_a_guest_refusing_the_unplug_quarantines_until_it_lets_go(bed: Bed):
    (vf,) = attach(bed)
    bed.hotplug.refuse_detach = True
    out = bed.engine.release(bed.vm(), "pod1", [], "rel1", later())
    assert out.quarantined == (vf.lease_id,)
    le = lease(bed, vf.lease_id)
    assert le.state == "quarantined" and "refused" in (le.reason or "")
    assert str(vf.host_pci) in bed.hotplug.plugged_vfs()
    bed.hotplug.refuse_detach = False
    bed.engine.reconcile()
    assert bed.store.get(vf.lease_id) is None and bed.hotplug.plugged_vfs() == {}
