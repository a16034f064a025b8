"""The NRI stub against each real containerd release of the test bed, driven over CRI."""

from __future__ import annotations

import json
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from cri_api.v1 import api_pb2

from nri_plugin.stub import Stub
from testbed.containerd import (
    Containerd,
    create_container,
    exec_sync,
    pod_config,
    run_pod,
    start_container,
    stop_and_remove_pod,
)
from testbed.waiting import eventually
from tests.nri.recording_plugin import ADJUST_BYTES, FAIL, MOUNT_SOURCE, RecordingNriPlugin

pytestmark = pytest.mark.containerd
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def plugin(containerd: Containerd) -> Iterator[tuple[RecordingNriPlugin, Stub]]:
    rec = RecordingNriPlugin()
    stub = Stub(rec, name="vfhptest", idx="50", socket_path=str(containerd.nri_socket), max_backoff_s=0.2)
    runner = stub.start()
    assert stub.synchronized.wait(10), "plugin did not register and synchronize"
    yield rec, stub
    stub.stop()
    runner.join(5)


def test_pod_events_reach_the_plugin_with_uid_annotations_and_netns(containerd, plugin) -> None:
    rec, _ = plugin
    rt = containerd.runtime()
    pod_id = run_pod(rt, "nri-events", annotations={"vfhotplug.io/vfs": "2"}, host_network=False)
    cfg = pod_config("nri-events", annotations={"vfhotplug.io/vfs": "2"}, host_network=False)
    cid = create_container(rt, pod_id, cfg, "app")
    stop_and_remove_pod(rt, pod_id)
    uid = cfg.metadata.uid
    run = [r for r in rec.of("run") if r["uid"] == uid]
    assert len(run) == 1
    assert run[0]["annotations"]["vfhotplug.io/vfs"] == "2"
    assert run[0]["netns"] and run[0]["netns"].startswith(str(containerd.layout.netns_dir))
    assert [r["container"] for r in rec.of("create") if r["uid"] == uid] == [cid]
    assert [r["uid"] for r in rec.of("stop")].count(uid) >= 1
    removed = [r for r in rec.of("remove") if r["uid"] == uid]
    assert len(removed) == 1 and removed[0]["netns"] is None  # Remove carries no netns: plugins must cache it


def test_adjustment_is_visible_inside_the_container(containerd, plugin, tmp_path: Path) -> None:
    src = tmp_path / "info"
    src.mkdir()
    (src / "hello.txt").write_text("from the plugin\n")
    annotations = {MOUNT_SOURCE: str(src)}
    rt = containerd.runtime()
    pod_id = run_pod(rt, "nri-adjust", annotations=annotations)
    try:
        cfg = pod_config("nri-adjust", annotations=annotations)
        cid = create_container(rt, pod_id, cfg, "app")
        start_container(rt, cid)
        code, out, _ = exec_sync(rt, cid, ["env"])
        assert code == 0 and f"VFHOTPLUG_TEST=pod={cfg.metadata.uid}" in out.splitlines()
        code, out, _ = exec_sync(rt, cid, ["cat", "/etc/vfhotplug-test/hello.txt"])
        assert (code, out) == (0, "from the plugin\n")
        code, out, _ = exec_sync(rt, cid, ["ls", "-l", "/dev/vfhotplug-null"])
        assert code == 0 and out.startswith("crw-rw-rw-") and "1,   3" in out
        status = rt.ContainerStatus(api_pb2.ContainerStatusRequest(container_id=cid, verbose=True))
        spec = json.loads(status.info["info"])["runtimeSpec"]
        assert spec["annotations"]["vfhotplug.io/test"] == "adjusted"
    finally:
        stop_and_remove_pod(rt, pod_id)


def test_one_mib_adjustment_passes(containerd, plugin) -> None:
    annotations = {ADJUST_BYTES: str(1 << 20)}
    rt = containerd.runtime()
    pod_id = run_pod(rt, "nri-big", annotations=annotations)
    try:
        cid = create_container(rt, pod_id, pod_config("nri-big", annotations=annotations), "app")
        start_container(rt, cid)
        status = rt.ContainerStatus(api_pb2.ContainerStatusRequest(container_id=cid, verbose=True))
        spec = json.loads(status.info["info"])["runtimeSpec"]
        assert len(spec["annotations"]["vfhotplug.io/bulk"]) == 1 << 20
    finally:
        stop_and_remove_pod(rt, pod_id)
    assert plugin[1].registrations == 1  # containerd did not drop the plugin over the large reply


def test_handler_error_fails_the_pod_with_our_message(containerd, plugin) -> None:
    rt = containerd.runtime()
    with pytest.raises(grpc.RpcError) as err:
        run_pod(rt, "nri-fail", annotations={FAIL: "pool 'fast' has no free VF"})
    details = str(err.value.details())
    assert "pool 'fast' has no free VF" in details
    assert "run_pod_sandbox for pod default/nri-fail" in details
    pods = rt.ListPodSandbox(api_pb2.ListPodSandboxRequest()).items
    assert [p.id for p in pods if p.metadata.name == "nri-fail"] == []


def test_pods_failed_by_nri_leave_nothing_running_and_containerd_restarts(containerd, plugin) -> None:
    rt = containerd.runtime()
    containerd.remove_orphans()  # of pods earlier tests had refused
    shims = len(containerd.host_paths.shim_pids(containerd.cri_socket))
    for _ in range(2):  # the same pod twice, as the kubelet retries it
        with pytest.raises(grpc.RpcError):
            run_pod(rt, "nri-refused", annotations={FAIL: "no VF for you"})
    leaked = containerd.remove_orphans()
    # containerd 2.1 keeps each failed pod's sandbox running (containerd/containerd#13355), which the test
    # bed removes; a release that stops doing so fails here, and its Runtime record should say so.
    assert len(leaked) == (2 if containerd.release.leaks_failed_sandboxes else 0)
    eventually(
        lambda: len(containerd.host_paths.shim_pids(containerd.cri_socket)) == shims, 10, "no new shim"
    )
    assert not any(containerd.layout.sandbox_dir(i).exists() for i in leaked)  # nor their /dev/shm mounts
    # Two records of one pod name made containerd 2.1 refuse to start (#13609); without them it starts.
    containerd.restart()
    assert containerd.runtime().ListPodSandbox(api_pb2.ListPodSandboxRequest(), timeout=10) is not None


def test_plugin_reconnects_after_containerd_restart_and_gets_synchronize(containerd, plugin) -> None:
    rec, stub = plugin
    rt = containerd.runtime()
    pod_id = run_pod(rt, "nri-restart", host_network=False)
    uid = pod_config("nri-restart").metadata.uid
    try:
        containerd.restart()
        eventually(lambda: stub.registrations >= 2, 20, "the plugin to register again")
        eventually(lambda: any(uid in r["pods"] for r in rec.of("synchronize")[1:]), 10, "Synchronize")
        netns = [r["pods"][uid] for r in rec.of("synchronize")[1:] if uid in r["pods"]][-1]
        assert netns and Path(netns).exists()
    finally:
        stop_and_remove_pod(containerd.runtime(), pod_id)


def test_preregistered_plugin_in_a_short_lived_containerd(tmp_path: Path, containerd: Containerd) -> None:
    plugins, conf, record = tmp_path / "plugins", tmp_path / "conf", tmp_path / "record.jsonl"
    plugins.mkdir()
    conf.mkdir()
    exe = plugins / "20-vfhprec"
    # containerd replaces the environment (no PATH): absolute interpreter, explicit import path.
    exe.write_text(
        textwrap.dedent(f"""\
            #!{sys.executable}
            import sys
            sys.path.insert(0, {str(REPO)!r})
            from tests.nri.recording_plugin import main
            main()
            """)
    )
    exe.chmod(0o755)
    (conf / "20-vfhprec.conf").write_text(str(record))
    other = Containerd(
        containerd.release,
        "prereg",
        nri_plugin_path=plugins,
        nri_plugin_config_path=conf,
        disable_connections=True,
    )
    try:
        other.start()
        rt = other.runtime()
        pod_id = run_pod(rt, "prereg-pod")
        stop_and_remove_pod(rt, pod_id)
        entries = [json.loads(line) for line in record.read_text().splitlines()]
        assert entries[0]["event"] == "configure" and entries[0]["runtime"] == "containerd"
        # v0.6.1 synchronizes only external plugins; v0.8 also pre-registered ones, right after Configure.
        synchronized = "synchronize" in [e["event"] for e in entries]
        assert synchronized == containerd.release.synchronizes_preregistered
        assert [e["event"] for e in entries if e.get("name") == "prereg-pod"] == ["run", "stop", "remove"]
    finally:
        other.cleanup()
