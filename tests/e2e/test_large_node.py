"""A node whose pods do not fit in one NRI message: after a containerd restart the plugin gets them all.

NRI v0.8+ (containerd 2.x) splits a Synchronize over ttrpc's 4 MiB limit into parts sent with more = true;
the plugin must gather them and reconcile once, or the runtime closes it and it re-registers in a loop
(issue 13: 329 registrations in 10 s, each reconciling only the first part)."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
from cri_api.v1 import api_pb2

from testbed.containerd import Containerd, pod_config, run_pod
from testbed.containerd import stop_and_remove_pod as remove_pod
from testbed.waiting import eventually
from tests.e2e.conftest import stack_for
from tests.stack import SimStack

pytestmark = pytest.mark.containerd
PODS = 45
# 45 pods x 105 KiB of annotations: 4.6 MiB, over ttrpc's 4 MiB message limit.
BULK = {"example.com/bulk": "x" * (105 << 10)}
# A re-registration loop goes round in well under a second; this long without one means none.
SETTLE_S = 3.0


@pytest.fixture(scope="module")
def stack(containerd: Containerd) -> Iterator[SimStack]:
    yield from stack_for(containerd, vfs=2)


def _pod_ids(containerd: Containerd) -> list[str]:
    return [p.id for p in containerd.runtime().ListPodSandbox(api_pb2.ListPodSandboxRequest()).items]


def test_large_node_is_synchronized_in_one_reconcile_after_a_restart(containerd, stack) -> None:
    rt = containerd.runtime()
    with ThreadPoolExecutor(4) as pool:
        ids = list(pool.map(lambda i: run_pod(rt, f"big-{i}", annotations=BULK), range(PODS)))
    log = stack.work / "nri.log"
    try:
        offset = log.stat().st_size
        containerd.restart()
        if containerd.release.splits_synchronize:
            eventually(lambda: "synchronized with" in log.read_text()[offset:], 30, "the plugin's reconcile")
        else:
            # NRI v0.6.1 has no split: containerd 1.7 fails to send the Synchronize, logs it, and keeps the
            # plugin connected unsynchronized; there is nothing the plugin could have answered.
            eventually(lambda: "is too large" in containerd.log_path.read_text(), 30, "1.7's refusal")
        time.sleep(SETTLE_S)
        after = log.read_text()[offset:]
        assert after.count("NRI: registered as") == 1, after[-3000:]
        assert "runtime connection closed" not in after[after.index("NRI: registered as") :]
        if containerd.release.splits_synchronize:
            assert after.count("synchronized with") == 1, after[-3000:]
            assert f"synchronized with {len(_pod_ids(containerd))} pods" in after
            parts = re.search(r"Synchronize of (\d+) pods and \d+ containers came in (\d+) parts", after)
            assert parts is not None and int(parts[1]) >= PODS and int(parts[2]) >= 2, after[-3000:]
        else:
            assert "synchronized with" not in after
        probe = run_pod(rt, "big-probe", annotations={"vfhotplug.io/vfs": "1"}, host_network=False)
        uid = pod_config("big-probe").metadata.uid
        # 2.1: still registered, the next pod's VF demand reaches the plugin and the host. 1.7 no longer
        # calls a plugin it could not synchronize, though the connection stays: the pod starts without.
        expected = [uid] if containerd.release.splits_synchronize else []
        assert [x.pod_uid for x in stack.leases() if x.pod_uid] == expected
        remove_pod(rt, probe)
    finally:
        with ThreadPoolExecutor(4) as pool:
            list(pool.map(lambda i: remove_pod(rt, i), ids))
