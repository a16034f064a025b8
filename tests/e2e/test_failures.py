"""Failures through CRI: host down, host stuck past the deadline, pool exhausted, the plugin killed -9
between steps, and concurrent churn. After each: the pod runs with its VFs or failed cleanly, and the host
holds no lease it should not."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import grpc
import pytest
from cri_api.v1 import api_pb2

from host_side.api.wire import LeaseInfo
from testbed.containerd import Containerd, pod_config, run_pod
from testbed.containerd import stop_and_remove_pod as remove_pod
from testbed.waiting import eventually
from tests.e2e.conftest import stack_for
from tests.stack import SimStack

pytestmark = pytest.mark.containerd
ONE = {"vfhotplug.io/vfs": "1"}


@pytest.fixture(scope="module")
def stack(containerd: Containerd) -> Iterator[SimStack]:
    yield from stack_for(containerd, vfs=24)


def _leases_of(stack: SimStack, uid: str) -> list[LeaseInfo]:
    return [lease for lease in stack.leases() if lease.pod_uid == uid]


def _pod_running(rt: object, name: str) -> bool:
    pods = rt.ListPodSandbox(api_pb2.ListPodSandboxRequest()).items  # type: ignore[attr-defined]
    return any(p.metadata.name == name and p.state == api_pb2.SANDBOX_READY for p in pods)


def _probe(rt: object) -> bool:
    try:
        pod_id = run_pod(rt, "probe", annotations=ONE, host_network=False)  # type: ignore[arg-type]
    except grpc.RpcError:
        return False
    remove_pod(rt, pod_id)  # type: ignore[arg-type]
    return True


def test_host_down_fails_the_pod_with_a_clear_message(containerd, stack) -> None:
    rt = containerd.runtime()
    assert stack.host_proc is not None
    stack.host_proc.terminate()
    stack.host_proc.wait(10)
    try:
        with pytest.raises(grpc.RpcError) as err:
            run_pod(rt, "hostless", annotations=ONE, host_network=False)
        assert "UNAVAILABLE" in str(err.value.details())
    finally:
        stack.start_host()
    assert not _pod_running(rt, "hostless")
    eventually(lambda: _probe(rt), 10, "the plugin to reach the restarted host")
    eventually(
        lambda: _leases_of(stack, pod_config("hostless").metadata.uid) == [], what="no lease for the pod"
    )


def test_host_stuck_past_the_deadline_rolls_back_and_frees_the_lease_later(containerd, stack) -> None:
    rt = containerd.runtime()
    assert stack.host_proc is not None
    stack.host_proc.send_signal(signal.SIGSTOP)
    try:
        with pytest.raises(grpc.RpcError) as err:
            run_pod(rt, "stuck", annotations=ONE, host_network=False)
        assert "deadline" in str(err.value.details()).lower() or "DEADLINE_EXCEEDED" in str(
            err.value.details()
        )
    finally:
        stack.host_proc.send_signal(signal.SIGCONT)
    assert not _pod_running(rt, "stuck")
    # the host may finish the attach it was stuck in; the plugin's journaled release then frees it
    eventually(lambda: _leases_of(stack, pod_config("stuck").metadata.uid) == [], 30, "the journaled release")


RUN_STEPS = ("preparing", "host attach", "wait for VFs in the guest", "bind", "pod files", "ready")
STOP_STEPS = ("releasing", "unbound", "host release")


@pytest.mark.parametrize("step", RUN_STEPS)
def test_plugin_killed_during_run_pod_sandbox(containerd, stack, step) -> None:
    rt = containerd.runtime()
    name = f"crash-run-{RUN_STEPS.index(step)}"
    uid = pod_config(name).metadata.uid
    stack.kill_plugin()
    stack.start_plugin(env={"VFHOTPLUG_CRASH_AFTER": step})
    pod_id = None
    try:
        pod_id = run_pod(rt, name, annotations=ONE, host_network=False)
    except grpc.RpcError:
        pass  # failed cleanly is one of the two allowed outcomes
    if stack.plugin_proc is not None:
        stack.plugin_proc.wait(10)
    stack.start_plugin()
    if _pod_running(rt, name):
        # containerd 1.7 starts the pod when the plugin dies mid-call: it must end up with its VF
        eventually(lambda: [x.state for x in _leases_of(stack, uid)] == ["attached"], 20, "the VF")
        pod_id = pod_id or next(
            p.id for p in rt.ListPodSandbox(api_pb2.ListPodSandboxRequest()).items if p.metadata.name == name
        )
    else:
        eventually(lambda: _leases_of(stack, uid) == [], 20, "no lease for the failed pod")
    if pod_id:
        remove_pod(rt, pod_id)
    eventually(lambda: _leases_of(stack, uid) == [], 20, "the pod's lease freed after removal")


@pytest.mark.parametrize("step", STOP_STEPS)
def test_plugin_killed_during_stop_pod_sandbox(containerd, stack, step) -> None:
    rt = containerd.runtime()
    name = f"crash-stop-{STOP_STEPS.index(step)}"
    uid = pod_config(name).metadata.uid
    stack.kill_plugin()
    stack.start_plugin(env={"VFHOTPLUG_CRASH_AFTER": step})
    pod_id = run_pod(rt, name, annotations=ONE, host_network=False)
    assert len(_leases_of(stack, uid)) == 1
    remove_pod(rt, pod_id)  # Stop/Remove errors are only logged by containerd
    if stack.plugin_proc is not None:
        stack.plugin_proc.wait(10)
    stack.start_plugin()
    eventually(lambda: _leases_of(stack, uid) == [], 20, "no lease after restart")


def test_twenty_pods_concurrently_three_rounds_no_leak_no_double_assignment(containerd, stack) -> None:
    rt = containerd.runtime()
    for rnd in range(3):
        names = [f"churn-{rnd}-{i}" for i in range(20)]
        with ThreadPoolExecutor(10) as pool:
            ids = list(pool.map(lambda n: run_pod(rt, n, annotations=ONE, host_network=False), names))
        leases = stack.leases()
        owned = [x.host_pci for x in leases if x.pod_uid]
        assert len(owned) == 20 and len(set(owned)) == 20, "a VF is owned twice"
        assert len({x.mac for x in leases if x.pod_uid}) == 20
        with ThreadPoolExecutor(10) as pool:
            list(pool.map(lambda i: remove_pod(rt, i), ids))
        eventually(lambda: [x for x in stack.leases() if x.pod_uid] == [], 20, "all leases free")
