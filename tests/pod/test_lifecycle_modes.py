"""PodLifecycle end to end per mode (kernel, dpdk, netns later) with FakeHost over the veth SimBackend,
real netns and a FakeSysfsKernel tree."""

import json
import subprocess
import threading
import time
from pathlib import Path

import pytest

from tests.pod.conftest import Guest, links, needs_root
from tests.pod.fakes import VFIO_GROUP_MAJOR, VFIO_MISC
from tests.pod.lifecycle_checks import KERNEL_2, RecordingStep, assert_clean, soon, vf_netdevs
from vm_side.datapath_steps import DpdkEnvStep
from vm_side.demand import ANNOTATION
from vm_side.dpdk_env import DpdkEnvs, file_prefix
from vm_side.lifecycle import PodError
from vm_side.pod_record import PodState

pytestmark = needs_root


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


def test_pluggable_steps_run_after_binding_and_undo_with_their_notes(guest: Guest, make_netns):
    step = RecordingStep()
    life = guest.lifecycle(steps=[step])
    pod = make_netns()
    life.prepare("u10", "pod-10", pod, {ANNOTATION: "2"}, soon())
    life.release("u10")
    assert step.undone == [{"ifnames": "net1,net2"}]
    assert_clean(guest, pod)


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
