"""Pods containerd starts without the plugin (NRI has no required plugins before containerd 2.2): while
vfhotplug-nri is down they run without VFs; once it is back, its Synchronize gives them their VFs, and
keeps retrying while the quota has no room."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

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
    yield from stack_for(containerd, vfs=4, quota=2)


def _held(stack: SimStack, name: str) -> list[LeaseInfo]:
    uid = pod_config(name).metadata.uid
    return [lease for lease in stack.leases() if lease.pod_uid == uid]


def test_a_pod_started_while_the_plugin_was_down_gets_its_vf_when_it_is_back(containerd, stack) -> None:
    rt = containerd.runtime()
    stack.kill_plugin()
    pod_id = run_pod(rt, "late1", annotations=ONE, host_network=False)  # nobody asked us
    assert _held(stack, "late1") == []
    stack.start_plugin()
    eventually(lambda: len(_held(stack, "late1")) == 1, 20, "the late pod's VF")
    remove_pod(rt, pod_id)
    eventually(lambda: _held(stack, "late1") == [], 10, "the late pod's VF given back")


def test_a_late_pod_waits_for_room_in_the_quota_and_then_gets_its_vf(containerd, stack) -> None:
    rt = containerd.runtime()
    full = run_pod(rt, "quota-full", annotations={"vfhotplug.io/vfs": "2"}, host_network=False)
    stack.kill_plugin()
    late = run_pod(rt, "late2", annotations=ONE, host_network=False)
    stack.start_plugin()
    # the sync finds no room (quota 2, both held): the pod keeps waiting, holding nothing
    eventually(lambda: "late2" in (stack.work / "nri.log").read_text(), 10, "the retry to be logged")
    assert _held(stack, "late2") == []
    remove_pod(rt, full)
    eventually(lambda: len(_held(stack, "late2")) == 1, 40, "the late pod's VF once the quota has room")
    remove_pod(rt, late)
    eventually(lambda: _held(stack, "late2") == [], 10, "no lease left")
