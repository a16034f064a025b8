"""PodLifecycle end to end with FakeHost over the veth SimBackend, real netns and a FakeSysfsKernel tree."""

import json
import subprocess
import threading
import time
from collections.abc import Mapping
from pathlib import Path

import pytest

from contract.errors import ErrorKind
from contract.host_api import HostCallError, VfRequest
from tests.pod.conftest import Guest, links, needs_root
from tests.pod.fakes import VFIO_GROUP_MAJOR, VFIO_MISC, SimulatedCrash
from vm_side.datapath_steps import DpdkEnvStep
from vm_side.demand import ANNOTATION, Mode
from vm_side.dpdk_env import DpdkEnvs, file_prefix
from vm_side.lifecycle import PodError
from vm_side.netlink import GuestNetlink, MovedLink
from vm_side.pod_record import PodRecord, PodState

pytestmark = needs_root
KERNEL_2 = json.dumps(
    [
        {"ifname": "net1", "ip": "10.1.0.2/24", "mtu": 1400},
        {"ifname": "net2", "ip": "10.2.0.2/24", "mtu": 1400},
    ]
)


def soon(seconds: float = 10.0) -> float:
    return time.monotonic() + seconds


def vf_netdevs(netns: str) -> list[str]:
    """Every simulated VF netdev left in a netns (the sim gives them MACs 02:fe:...)."""
    return sorted(n for n, link in links(netns).items() if link.get("address", "").startswith("02:fe:"))


def assert_clean(guest: Guest, *netns: str) -> None:
    # A failure close to the deadline rolls back in the background: give that a moment.
    end = time.monotonic() + 5
    while (guest.host.leases or guest.lifecycle().store.all()) and time.monotonic() < end:
        time.sleep(0.05)
    assert guest.host.leases == {}
    assert guest.backend.live_devices("vm1") == {}
    assert guest.lifecycle().store.all() == []
    for ns in (guest.netns, *netns):
        if Path(ns).exists():
            assert vf_netdevs(ns) == []


def test_no_annotation_no_host_call(guest: Guest):
    assert guest.lifecycle().prepare("u0", "p0", "", {"other": "x"}, soon()) is None
    assert guest.host.calls == []


def test_kernel_mode_two_vfs_into_the_pod_and_back(guest: Guest, make_netns):
    pod = make_netns()
    life = guest.lifecycle()
    rec = life.prepare("u1", "pod-1", pod, {ANNOTATION: KERNEL_2}, soon())
    assert rec is not None and rec.state is PodState.READY
    macs = {lease.grant.mac for lease in guest.host.leases_of("u1")}
    inside = links(pod)
    for name, net in (("net1", "10.1.0.2"), ("net2", "10.2.0.2")):
        link = inside[name]
        assert link["address"] in macs and link["mtu"] == 1400 and "UP" in link["flags"]
        assert [a["local"] for a in link["addr_info"] if a["family"] == "inet"] == [net]
    assert {inside["net1"]["address"], inside["net2"]["address"]} == macs
    assert vf_netdevs(guest.netns) == []

    adj = life.adjustment("u1")
    assert adj is not None and adj.devices == ()
    assert dict(adj.env)["VFHOTPLUG_IFNAMES"] == "net1,net2"
    # The same pod asking again (a retried RunPodSandbox) gets the same record, no new host call.
    assert life.prepare("u1", "pod-1", pod, {ANNOTATION: KERNEL_2}, soon()) == rec
    assert guest.host.calls.count("attach") == 1

    life.release("u1")
    assert_clean(guest, pod)
    calls = len(guest.host.calls)
    life.release("u1")  # Remove after Stop
    assert len(guest.host.calls) == calls and life.adjustment("u1") is None


def test_dpdk_mode_binds_vfio_and_gives_back_with_journaled_release(guest: Guest, tmp_path: Path):
    huge = tmp_path / "huge"
    huge.mkdir()
    life = guest.lifecycle(steps=[DpdkEnvStep(DpdkEnvs(tmp_path / "dpdk", huge))])
    rec = life.prepare("u2", "pod-2", "", {ANNOTATION: '[{"count": 2, "mode": "dpdk"}]'}, soon())
    assert rec is not None
    prefix = file_prefix("u2")
    # what EAL would leave in the hugepage folder: this pod's pages and another pod's
    (huge / f"{prefix}map_0").write_bytes(b"")
    (huge / "vfhothermap_0").write_bytes(b"")
    pcis = [str(vf.guest_pci) for vf in rec.vfs]
    devices = guest.sysfs.root / "bus/pci/devices"
    assert [(devices / p / "driver").readlink().name for p in pcis] == ["vfio-pci", "vfio-pci"]

    adj = life.adjustment("u2")
    assert adj is not None
    assert [(d.path, d.major, d.minor) for d in adj.devices] == [
        ("/dev/vfio/vfio", *VFIO_MISC),
        ("/dev/vfio/16", VFIO_GROUP_MAJOR, 16),
        ("/dev/vfio/17", VFIO_GROUP_MAJOR, 17),
    ]
    assert dict(adj.env)["PCIDEVICE_VFHOTPLUG_IO_DEFAULT"] == ",".join(pcis)
    devinfo = Path(rec.run_dir or "") / "devinfo"
    docs = [json.loads(p.read_text()) for p in sorted(devinfo.iterdir())]
    assert [d["pci"]["pci-address"] for d in docs] == pcis and docs[0]["version"] == "1.1.0"
    mounts = {m.destination: m.source for m in adj.mounts}
    assert mounts == {
        "/var/run/k8s.cni.cncf.io/devinfo/dp": f"{rec.run_dir}/devinfo",
        "/dev/hugepages": str(huge),
        "/var/run/dpdk": str(tmp_path / "dpdk" / "u2"),
    }
    assert Path(mounts["/var/run/dpdk"]).is_dir()
    assert f"--file-prefix={prefix}" in dict(adj.env)["VFHOTPLUG_DPDK_EAL_ARGS"].split()

    guest.host.up = False  # the release cannot reach the host: journaled, local undo done anyway
    life.release("u2")
    assert [(devices / p / "driver").readlink().name for p in pcis] == ["iavf", "iavf"]
    assert not devinfo.exists()
    assert not (tmp_path / "dpdk" / "u2").exists()
    assert sorted(p.name for p in huge.iterdir()) == ["vfhothermap_0"]
    assert [e.pod_uid for e in life.journal.entries()] == ["u2"] and len(guest.host.leases) == 2
    assert life.worker.run_once() == 1  # still down: kept
    guest.host.up = True
    life.worker.start()
    try:
        for _ in range(100):
            if not life.journal.entries():
                break
            time.sleep(0.05)
    finally:
        life.worker.stop()
    assert_clean(guest)


@pytest.mark.parametrize(
    ("annotation", "field"),
    [
        ('[{"count": 0}]', "'count'"),
        ('[{"mode": "x"}]', "'mode'"),
        ('[{"vlan": 9999}]', "'vlan'"),
        ("9", "limit"),
    ],
)
def test_bad_demand_fails_without_host_call(guest: Guest, annotation, field):
    with pytest.raises(PodError, match=field) as err:
        guest.lifecycle().prepare("u3", "pod-3", "/x", {ANNOTATION: annotation}, soon())
    assert "pod pod-3 (u3): bad demand" in str(err.value)
    assert guest.host.calls == []


def test_vpp_mode_needs_its_datapath_step(guest: Guest):
    with pytest.raises(PodError, match="no VPP is configured"):
        guest.lifecycle().prepare("u4", "pod-4", "", {ANNOTATION: '[{"mode": "vpp"}]'}, soon())
    assert guest.host.calls == []


def test_pool_exhausted(guest: Guest, make_netns):
    with pytest.raises(PodError, match="RESOURCE_EXHAUSTED"):
        guest.lifecycle().prepare(
            "u5", "pod-5", make_netns(), {ANNOTATION: '[{"pool": "fast", "count": 3}]'}, soon()
        )
    assert_clean(guest)


def test_host_down(guest: Guest, make_netns):
    guest.host.up = False
    with pytest.raises(PodError, match=r"pod pod-6 \(u6\): host attach: .*UNAVAILABLE"):
        guest.lifecycle().prepare("u6", "pod-6", make_netns(), {ANNOTATION: "1"}, soon())
    guest.host.up = True
    guest.lifecycle().worker.run_once()
    assert_clean(guest)


def test_a_dropped_connection_is_retried_with_the_same_request_id(guest: Guest, make_netns):
    real_attach = guest.host.attach
    seen: list[str] = []

    def flaky_attach(pod_uid, pod_name, requests, request_id, timeout_s):
        seen.append(request_id)
        if len(seen) == 1:
            raise HostCallError(ErrorKind.UNAVAILABLE, "Stream removed (Socket closed)")
        return real_attach(pod_uid, pod_name, requests, request_id, timeout_s)

    guest.host.attach = flaky_attach  # type: ignore[method-assign]
    rec = guest.lifecycle().prepare("u6b", "pod-6b", make_netns(), {ANNOTATION: "1"}, soon())
    assert rec is not None and len(rec.vfs) == 1
    assert len(seen) == 2 and seen[0] == seen[1]


def test_host_slow_past_the_deadline(guest: Guest, make_netns):
    guest.host.attach_delay_s = 5.0
    start = time.monotonic()
    lc = guest.lifecycle()
    with pytest.raises(PodError, match="DEADLINE_EXCEEDED"):
        lc.prepare("u7", "pod-7", make_netns(), {ANNOTATION: "2"}, start + 1.0)
    # The host call got the deadline minus the rollback margin, not the runtime's whole budget.
    assert guest.host.attach_timeouts[0] <= 1.0 - guest.config.margin_s
    assert lc.wait_background(10)  # too late to undo inside the call: undone right after
    assert_clean(guest)


def test_deadline_already_near_aborts_before_the_host(guest: Guest, make_netns):
    lc = guest.lifecycle()
    with pytest.raises(PodError, match="rollback margin"):
        lc.prepare("u8", "pod-8", make_netns(), {ANNOTATION: "1"}, time.monotonic() + 0.1)
    assert "attach" not in guest.host.calls
    assert lc.wait_background(10)
    assert_clean(guest)


def test_netdev_never_appears(guest: Guest, make_netns):
    real_attach = guest.backend.attach

    def attach_without_netdev(*args, **kw):
        dev = real_attach(*args, **kw)
        # The VF shows up on the bus but its driver never makes a netdev.
        for net in (guest.sysfs.root / "bus/pci/devices" / str(dev.guest_pci) / "net").iterdir():
            (net / "address").unlink()
            net.rmdir()
        return dev

    guest.backend.attach = attach_without_netdev  # type: ignore[method-assign]
    pod = make_netns()
    lc = guest.lifecycle()
    with pytest.raises(PodError, match=r"PCI 0000:10:00.0 MAC 02:fe:.*: PCI device present, no netdev yet"):
        lc.prepare("u9", "pod-9", pod, {ANNOTATION: "1"}, soon(1.0))
    assert lc.wait_background(10)
    assert_clean(guest, pod)


class RecordingStep:
    """A datapath step stand-in that records apply/undo and can fail."""

    name = "recording"

    def __init__(self, fail: bool = False) -> None:
        self.fail = fail
        self.undone: list[Mapping[str, str]] = []

    def handles(self, mode: Mode) -> bool:
        return mode is Mode.KERNEL

    def apply(self, rec: PodRecord, deadline: float) -> dict[str, str]:
        if self.fail:
            raise RuntimeError("datapath refused")
        return {"ifnames": ",".join(vf.slot.ifname for vf in rec.vfs)}

    def undo(self, rec: PodRecord, notes: Mapping[str, str]) -> None:
        self.undone.append(dict(notes))


def test_pluggable_steps_run_after_binding_and_undo_with_their_notes(guest: Guest, make_netns):
    step = RecordingStep()
    life = guest.lifecycle(steps=[step])
    pod = make_netns()
    life.prepare("u10", "pod-10", pod, {ANNOTATION: "2"}, soon())
    life.release("u10")
    assert step.undone == [{"ifnames": "net1,net2"}]
    assert_clean(guest, pod)


def test_failing_step_rolls_back_everything(guest: Guest, make_netns):
    step = RecordingStep(fail=True)
    pod = make_netns()
    with pytest.raises(PodError, match="recording: datapath refused; rolled back"):
        guest.lifecycle(steps=[step]).prepare("u11", "pod-11", pod, {ANNOTATION: "2"}, soon())
    assert_clean(guest, pod)


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


def test_concurrent_pods_get_distinct_vfs_and_leave_nothing(guest: Guest, make_netns):
    pods = {f"c{i}": make_netns() for i in range(4)}
    life = guest.lifecycle()
    errors: list[PodError] = []

    def run(uid: str, netns: str) -> None:
        try:
            life.prepare(uid, f"pod-{uid}", netns, {ANNOTATION: "1"}, soon(5))
        except PodError as e:  # collected and asserted below
            errors.append(e)

    threads = [threading.Thread(target=run, args=item) for item in pods.items()]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    vfs = [lease.vf for lease in guest.host.leases.values()]
    assert len(vfs) == 4 and len(set(vfs)) == 4
    threads = [threading.Thread(target=life.release, args=(uid,)) for uid in pods]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert_clean(guest, *pods.values())


def test_netns_later_then_enter_netns(guest: Guest, make_netns):
    life = guest.lifecycle()
    rec = life.prepare("u14", "ctr-14", "", {ANNOTATION: '[{"ip": "10.4.0.2/24"}]'}, soon(), netns_later=True)
    assert rec is not None and vf_netdevs(guest.netns) == [guest.backend.netdev_name(0x10)]
    pod = make_netns()
    life.enter_netns("u14", pod, soon())
    assert vf_netdevs(pod) == ["net1"] and vf_netdevs(guest.netns) == []
    assert life.enter_netns("u14", pod, soon()).netns == pod  # repeat: nothing more to do
    with pytest.raises(PodError, match="already in"):
        life.enter_netns("u14", make_netns(), soon())
    life.release("u14")
    assert_clean(guest, pod)


def test_enter_netns_failure_rolls_back_the_pod(guest: Guest, make_netns):
    life = guest.lifecycle()
    life.prepare("u15", "ctr-15", "", {ANNOTATION: "1"}, soon(), netns_later=True)
    pod = make_netns()
    subprocess.run(
        ["ip", "-n", Path(pod).name, "link", "add", "net1", "type", "veth", "peer", "name", "y"], check=True
    )
    with pytest.raises(PodError, match=r"ctr-15 \(u15\): enter netns: .*net1.*rolled back"):
        life.enter_netns("u15", pod, soon())
    assert_clean(guest)
    assert sorted(links(pod)) == ["lo", "net1", "y"]  # the pod's own link is untouched


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
