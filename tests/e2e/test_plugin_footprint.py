"""What the real vfhotplug-nri process loads: with no [vpp] table it never imports vpp_papi, and the guest
netlink needs no pyroute2 (memory: both are megabytes the plugin would carry for nothing). Python's own
import log (PYTHONPROFILEIMPORTTIME, on the plugin's stderr) is the oracle, read after a 1-VF pod."""

from __future__ import annotations

import re
import signal
from collections.abc import Iterator

import pytest

from testbed.containerd import Containerd, run_pod, stop_and_remove_pod
from tests.e2e.conftest import stack_for
from tests.stack import SimStack

pytestmark = pytest.mark.containerd


@pytest.fixture(scope="module")
def stack(containerd: Containerd) -> Iterator[SimStack]:
    yield from stack_for(containerd, vfs=4)


def test_plugin_without_vpp_config_never_imports_vpp_papi_nor_pyroute2(containerd, stack) -> None:
    assert "[vpp]" not in stack.plugin_config.read_text()
    stack.kill_plugin(signal.SIGTERM)
    log = stack.work / "nri.log"
    offset = log.stat().st_size
    stack.start_plugin(env={"PYTHONPROFILEIMPORTTIME": "1"})
    rt = containerd.runtime()
    pod = run_pod(rt, "footprint", annotations={"vfhotplug.io/vfs": "1"}, host_network=False)
    stop_and_remove_pod(rt, pod)
    assert stack.leases() == [] or all(not x.pod_uid for x in stack.leases())
    imported = set(re.findall(r"^import time:\s+\d+ \|\s+\d+ \|\s+(\S+)", log.read_text()[offset:], re.M))
    assert {"grpc", "nri_plugin.stub", "vm_side.lifecycle"} <= imported  # the oracle sees the plugin
    assert "ready with 1 VFs" in log.read_text()[offset:]
    assert not {m for m in imported if m.split(".")[0] in ("vpp_papi", "pyroute2")}
