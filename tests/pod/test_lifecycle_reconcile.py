"""PodLifecycle after a crash or restart: reconcile finishes or undoes what the records say was half done,
keeps live pods, releases vanished ones, and journals what the host cannot confirm."""

from collections.abc import Mapping

import pytest

from contract.host_api import VfRequest
from tests.pod.conftest import Guest, links, needs_root
from tests.pod.fakes import SimulatedCrash
from tests.pod.lifecycle_checks import KERNEL_2, RecordingStep, assert_clean, soon, vf_netdevs
from vm_side.demand import ANNOTATION
from vm_side.netlink import GuestNetlink, MovedLink
from vm_side.pod_record import PodRecord

pytestmark = needs_root


class CrashAfterMove(GuestNetlink):
    def move_into_pod(self, *args, **kw) -> MovedLink:
        super().move_into_pod(*args, **kw)
        raise SimulatedCrash("after moving a netdev")


@pytest.mark.parametrize("crash", ["attach", "move", "step"])
def test_crash_mid_prepare_then_reconcile_leaks_nothing(guest: Guest, make_netns, crash):
    pod = make_netns()
    if crash == "attach":
        guest.host.crash_after.add("attach")
    netlink = CrashAfterMove(guest.netns) if crash == "move" else None
    steps = [RecordingStep()] if crash != "step" else [CrashingStep()]
    with pytest.raises(SimulatedCrash):
        guest.lifecycle(steps=steps, netlink=netlink).prepare(
            "u12", "pod-12", pod, {ANNOTATION: KERNEL_2}, soon()
        )
    guest.host.crash_after.clear()
    assert guest.host.leases_of("u12")  # the crash left leases behind

    restarted = guest.lifecycle(steps=[RecordingStep()])
    report = restarted.reconcile({"u12": pod})
    assert report.undone == ("u12",) and report.synced
    assert_clean(guest, pod)
    # The runtime retries the pod: a new attempt gets fresh leases and works.
    rec = restarted.prepare("u12", "pod-12", pod, {ANNOTATION: KERNEL_2}, soon())
    assert rec is not None and rec.request_id.startswith("u12/2/")
    assert sorted(links(pod)) == ["lo", "net1", "net2"]
    restarted.release("u12")
    assert_clean(guest, pod)


class CrashingStep(RecordingStep):
    def apply(self, rec: PodRecord, deadline: float) -> dict[str, str]:
        raise SimulatedCrash("in a datapath step")


class CrashingUndoStep(RecordingStep):
    def undo(self, rec: PodRecord, notes: Mapping[str, str]) -> None:
        raise SimulatedCrash("undoing a datapath step")


@pytest.mark.parametrize("crash", ["undo", "release"])
def test_crash_mid_release_then_reconcile_finishes_it(guest: Guest, make_netns, crash):
    pod = make_netns()
    guest.lifecycle(steps=[RecordingStep()]).prepare("u13", "pod-13", pod, {ANNOTATION: "1"}, soon())
    if crash == "release":
        guest.host.crash_after.add("release")
    with pytest.raises(SimulatedCrash):
        guest.lifecycle(steps=[CrashingUndoStep() if crash == "undo" else RecordingStep()]).release("u13")
    guest.host.crash_after.clear()
    step = RecordingStep()
    report = guest.lifecycle(steps=[step]).reconcile({})
    # The record still says releasing, so reconcile repeats every (idempotent) undo and the release.
    assert report.undone == ("u13",) and step.undone == [{"ifnames": "net1"}]
    assert_clean(guest, pod)


def test_reconcile_keeps_live_pods_and_releases_vanished_ones(guest: Guest, make_netns):
    live, gone = make_netns(), make_netns()
    life = guest.lifecycle()
    life.prepare("live", "pod-live", live, {ANNOTATION: "1"}, soon())
    life.prepare("gone", "pod-gone", gone, {ANNOTATION: "1"}, soon())
    # A lease the VM has no record of (e.g. records lost with the VM's disk): Sync must free it.
    guest.host.attach("orphan", "pod-orphan", [VfRequest(pool="fast")], "orphan/1", 1.0)
    assert len(guest.host.leases) == 3
    report = guest.lifecycle().reconcile({"live": live})
    assert report.kept == ("live",) and report.undone == ("gone",)
    assert {lease.pod_uid for lease in guest.host.leases.values()} == {"live"}
    assert vf_netdevs(gone) == [] and vf_netdevs(live) == ["net1"]
    guest.lifecycle().release("live")
    assert_clean(guest, live, gone)


def test_reconcile_with_the_host_down_journals_and_finishes_later(guest: Guest, make_netns):
    pod = make_netns()
    guest.lifecycle().prepare("u16", "pod-16", pod, {ANNOTATION: "1"}, soon())
    guest.host.up = False
    restarted = guest.lifecycle()
    report = restarted.reconcile({}, deadline=soon(2))
    assert (report.undone, report.owed, report.synced) == (("u16",), 1, False)
    assert vf_netdevs(pod) == [] and len(guest.host.leases) == 1
    guest.host.up = True
    assert restarted.reconcile({}).synced and restarted.journal.entries() == []
    assert_clean(guest, pod)
