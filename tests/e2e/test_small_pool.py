"""A pool of two VFs through CRI: the pod that finds it empty fails with the host's RESOURCE_EXHAUSTED."""

from __future__ import annotations

from collections.abc import Iterator

import grpc
import pytest

from testbed.containerd import Containerd, pod_config, run_pod
from testbed.containerd import stop_and_remove_pod as remove_pod
from tests.e2e.conftest import stack_for
from tests.stack import SimStack

pytestmark = pytest.mark.containerd


@pytest.fixture(scope="module")
def stack(containerd: Containerd) -> Iterator[SimStack]:
    yield from stack_for(containerd, vfs=2)


def test_pool_exhausted_fails_the_pod_and_keeps_nothing(containerd, stack) -> None:
    rt = containerd.runtime()
    full = run_pod(rt, "takes-both", annotations={"vfhotplug.io/vfs": "2"}, host_network=False)
    try:
        with pytest.raises(grpc.RpcError) as err:
            run_pod(rt, "one-too-many", annotations={"vfhotplug.io/vfs": "1"}, host_network=False)
        details = str(err.value.details())
        assert "RESOURCE_EXHAUSTED" in details and "'net'" in details, details
        uid = pod_config("one-too-many").metadata.uid
        assert [x for x in stack.leases() if x.pod_uid == uid] == []
    finally:
        remove_pod(rt, full)
    assert [x for x in stack.leases() if x.pod_uid] == []
