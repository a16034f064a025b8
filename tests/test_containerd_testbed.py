"""The containerd test bed itself, on each real containerd release (root only)."""

from __future__ import annotations

import json
import os
import subprocess
import tomllib
from pathlib import Path
from typing import Any

import grpc
import pytest
from cri_api.v1 import api_pb2

from testbed.containerd import (
    Containerd,
    ContainerdError,
    create_container,
    exec_sync,
    pod_config,
    run_pod,
    start_container,
    stop_and_remove_pod,
)
from testbed.containerd.instance import NRI_TABLE

pytestmark = pytest.mark.containerd


def _pod_ids(cd: Containerd) -> set[str]:
    resp = cd.runtime().ListPodSandbox(api_pb2.ListPodSandboxRequest(), timeout=10)
    return {p.id for p in resp.items}


def _netns_path(cd: Containerd, pod_id: str) -> Path:
    status = cd.runtime().PodSandboxStatus(
        api_pb2.PodSandboxStatusRequest(pod_sandbox_id=pod_id, verbose=True), timeout=10
    )
    spec = json.loads(status.info["info"])["runtimeSpec"]
    (path,) = [ns["path"] for ns in spec["linux"]["namespaces"] if ns["type"] == "network"]
    return Path(path)


def _nsfs_mounts() -> set[str]:
    with open("/proc/self/mountinfo") as f:
        return {line.split()[4] for line in f if " - nsfs " in line}


def _tree(top: Path) -> set[Path]:
    return {Path(d) / n for d, dirs, files in os.walk(top) for n in dirs + files}


def test_version_is_the_release_asked_for(containerd: Containerd) -> None:
    v = containerd.runtime().Version(api_pb2.VersionRequest(), timeout=10)
    assert v.runtime_name == "containerd"
    assert v.runtime_version.startswith(containerd.release.version + ".")
    assert v.runtime_api_version == "v1"


def test_host_network_pod_runs_busybox_and_exec_works(containerd: Containerd) -> None:
    rt = containerd.runtime()
    pod = run_pod(rt, "tb-hostnet")
    try:
        status = rt.PodSandboxStatus(api_pb2.PodSandboxStatusRequest(pod_sandbox_id=pod), timeout=10).status
        assert status.state == api_pb2.SANDBOX_READY
        assert status.linux.namespaces.options.network == api_pb2.NODE
        cid = create_container(rt, pod, pod_config("tb-hostnet"), "busybox")
        start_container(rt, cid)
        state = rt.ContainerStatus(api_pb2.ContainerStatusRequest(container_id=cid), timeout=10).status.state
        assert state == api_pb2.CONTAINER_RUNNING
        assert exec_sync(rt, cid, ["echo", "hello from busybox"]) == (0, "hello from busybox\n", "")
        assert exec_sync(rt, cid, ["sh", "-c", "echo oops >&2; exit 3"]) == (3, "", "oops\n")
        # Host network: the container is in the test process's own network namespace.
        code, netns, _ = exec_sync(rt, cid, ["readlink", "/proc/self/ns/net"])
        assert (code, netns.strip()) == (0, os.readlink("/proc/self/ns/net"))
    finally:
        stop_and_remove_pod(rt, pod)
    assert pod not in _pod_ids(containerd)


def test_own_netns_pod_gets_veth_and_netns_under_state_dir(containerd: Containerd) -> None:
    rt = containerd.runtime()
    pod = run_pod(rt, "tb-netns", host_network=False)
    try:
        status = rt.PodSandboxStatus(api_pb2.PodSandboxStatusRequest(pod_sandbox_id=pod), timeout=10).status
        assert status.network.ip == "192.0.2.2"
        netns = _netns_path(containerd, pod)
        assert netns.parent == containerd.layout.netns_dir
        assert str(netns) in _nsfs_mounts()
        # Independent look into the pod netns: the veth pair of cni-veth, up, with its address.
        links = subprocess.run(
            ["nsenter", f"--net={netns}", "ip", "-o", "-4", "addr", "show", "dev", "eth0"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        assert "inet 192.0.2.2/24" in links
    finally:
        stop_and_remove_pod(rt, pod)
    assert not netns.exists()
    assert str(netns) not in _nsfs_mounts()


def test_restart_keeps_pods_and_old_stubs_work(containerd: Containerd) -> None:
    rt = containerd.runtime()
    pod = run_pod(rt, "tb-restart")
    try:
        cid = create_container(rt, pod, pod_config("tb-restart"), "busybox")
        start_container(rt, cid)
        old_pid = containerd.pid
        containerd.restart()
        assert containerd.pid not in (None, old_pid)
        assert pod in _pod_ids(containerd)
        assert exec_sync(rt, cid, ["echo", "still here"]) == (0, "still here\n", "")
    finally:
        stop_and_remove_pod(rt, pod)


def test_second_instance_runs_beside_the_first_and_cleans_up(containerd: Containerd) -> None:
    run_root = containerd.host_paths.run_root
    before = _tree(run_root)
    second = Containerd(containerd.release, "second", nri_request_timeout="1s")
    assert {second.cri_socket, second.nri_socket}.isdisjoint({containerd.cri_socket, containerd.nri_socket})
    second.start()
    try:
        pod = run_pod(second.runtime(), "tb-second")  # left running: cleanup() must remove it
        assert pod in _pod_ids(second)
        assert pod not in _pod_ids(containerd)
        shim_socket = second.host_paths.shim_socket(second.cri_socket, pod)
        assert shim_socket.exists()
        assert second.host_paths.shim_pids(second.cri_socket)
        assert containerd.host_paths.shim_pids(containerd.cri_socket) == []
    finally:
        second.cleanup()
    assert second.pid is None
    assert second.host_paths.shim_pids(second.cri_socket) == []
    assert not shim_socket.exists()
    assert _tree(run_root) <= before
    assert not second.layout.dir.exists()
    # The shared instance was not disturbed.
    version = containerd.runtime().Version(api_pb2.VersionRequest(), timeout=10).runtime_version
    assert version.startswith(containerd.release.version + ".")


def test_start_reports_containerd_exiting_with_its_log(containerd: Containerd) -> None:
    # A config error is fatal on every release (a dud pre-registered plugin is fatal on 1.7 only).
    broken = Containerd(containerd.release, "broken", nri_request_timeout="soon", start_timeout=20)
    try:
        with pytest.raises(ContainerdError, match="exited during start-up") as err:
            broken.start()
        assert 'invalid duration "soon"' in str(err.value)
        assert broken.pid is None
    finally:
        broken.cleanup()
    assert not broken.layout.dir.exists()


def test_cri_errors_reach_the_caller(containerd: Containerd) -> None:
    rt = containerd.runtime()
    with pytest.raises(grpc.RpcError) as err:
        create_container(rt, "no-such-pod", pod_config("ghost"), "c")
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    stop_and_remove_pod(rt, "no-such-pod")  # already gone is fine


def _containerd_config(cd: Containerd, *args: str) -> dict[str, Any]:
    done = subprocess.run(
        [str(cd.layout.containerd_bin), *args], capture_output=True, text=True, timeout=30, check=True
    )
    return tomllib.loads(done.stdout)


def test_every_table_the_test_bed_writes_is_a_plugin_of_the_release(containerd: Containerd) -> None:
    # containerd ignores tables of unknown plugin ids silently: a wrong id would leave its defaults on.
    written = tomllib.loads(containerd.layout.config_path.read_text())
    known = _containerd_config(containerd, "config", "default")
    assert written["version"] == known["version"] == containerd.release.config_version
    assert set(written["plugins"]) <= set(known["plugins"])


def test_shipped_nri_snippet_is_what_the_release_reads_and_the_bed_runs(
    containerd: Containerd, tmp_path: Path
) -> None:
    shipped = containerd.release.nri_snippet
    text = shipped.read_text()
    if containerd.release.config_version == 2:
        text = "version = 2\n" + text  # 1.7's snippet is merged into a version 2 config.toml
    (tmp_path / "config.toml").write_text(text)
    read = _containerd_config(containerd, "--config", str(tmp_path / "config.toml"), "config", "dump")
    want = tomllib.loads(shipped.read_text())["plugins"][NRI_TABLE]
    assert {k: read["plugins"][NRI_TABLE][k] for k in want} == want
    assert want["disable"] is False
    bed = tomllib.loads(containerd.layout.config_path.read_text())["plugins"][NRI_TABLE]
    assert bed["plugin_request_timeout"] == want["plugin_request_timeout"]
