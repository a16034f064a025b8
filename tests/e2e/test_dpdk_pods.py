"""dpdk-mode pods through CRI. This kernel has no vfio-pci, so the plugin process runs with the named fake
FakeSysfsKernel for its sysfs writes (tests/e2e/fake_kernel_plugin.py); the rest is the production path."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from contract.pci import PciAddress
from testbed.containerd import Containerd, create_container, exec_sync, pod_config, run_pod, start_container
from testbed.containerd import stop_and_remove_pod as remove_pod
from testbed.waiting import eventually
from tests.datapath import testpmd
from tests.e2e.conftest import stack_for
from tests.stack import SimStack
from vm_side.adjustment import build_adjustment
from vm_side.cdi_store import CdiStore
from vm_side.health_report import HEALTH_FILE, read_health
from vm_side.record_store import RecordStore

pytestmark = pytest.mark.containerd


@pytest.fixture(scope="module")
def stack(containerd: Containerd) -> Iterator[SimStack]:
    yield from stack_for(containerd, vfs=4, plugin_module="tests.e2e.fake_kernel_plugin")


def _driver(stack: SimStack, pci: str) -> str:
    return os.path.basename(os.readlink(stack.guest_sysfs / "bus/pci/devices" / pci / "driver"))


def test_dpdk_pod_sees_vfio_env_devinfo_and_hugepages(containerd, stack) -> None:
    rt = containerd.runtime()
    ann = {"vfhotplug.io/vfs": '[{"count": 2, "mode": "dpdk"}]'}
    cfg = pod_config("dpdk2", annotations=ann, host_network=False)
    pod_id = run_pod(rt, "dpdk2", annotations=ann, host_network=False)
    uid = cfg.metadata.uid
    leases = [x for x in stack.leases() if x.pod_uid == uid]
    guest_pcis = sorted(str(x.guest_pci) for x in leases)
    assert len(guest_pcis) == 2
    assert [_driver(stack, p) for p in guest_pcis] == ["vfio-pci", "vfio-pci"]
    groups = sorted(
        Path(os.readlink(stack.guest_sysfs / "bus/pci/devices" / p / "iommu_group")).name for p in guest_pcis
    )

    # Written for runtimes that read CDI; containerd 1.7.24 (NRI v0.6.1) gets the same inline.
    spec = json.loads(CdiStore(stack.cdi_dir).path(uid).read_text())
    assert [d["name"] for d in spec["devices"]] == [f"{uid}-net1", f"{uid}-net2"]

    cid = create_container(rt, pod_id, cfg, "dpdk-app")
    start_container(rt, cid)
    code, out, _ = exec_sync(rt, cid, ["ls", "/dev/vfio"])
    assert code == 0 and sorted(out.split()) == sorted(["vfio", *groups])
    code, env, _ = exec_sync(rt, cid, ["env"])
    pool_env = [
        line.split("=", 1)[1] for line in env.splitlines() if line.startswith("PCIDEVICE_VFHOTPLUG_IO_NET=")
    ]
    assert len(pool_env) == 1 and sorted(pool_env[0].split(",")) == guest_pcis  # in the pod's VF order
    code, out, _ = exec_sync(rt, cid, ["ls", "/var/run/k8s.cni.cncf.io/devinfo/dp"])
    assert code == 0 and len(out.split()) == 2 and all(p in out for p in guest_pcis)
    code, out, _ = exec_sync(rt, cid, ["cat", "/proc/mounts"])
    assert " /dev/hugepages " in out and " /var/run/dpdk " in out

    remove_pod(rt, pod_id)
    assert [x for x in stack.leases() if x.pod_uid == uid] == []
    assert CdiStore(stack.cdi_dir).pod_uids() == []
    # the VFs went back to their kernel driver before the host took them (then the sim unplugged them)
    assert all(not (stack.guest_sysfs / "bus/pci/devices" / p).exists() for p in guest_pcis)
    assert PciAddress.parse(guest_pcis[0])


@pytest.mark.skipif(testpmd.newest() is None, reason="no dpdk-testpmd: run testbed/dpdk/setup.sh")
def test_dpdk_health_from_real_testpmd_in_the_pods_env_and_cleanup(containerd, stack) -> None:
    rt = containerd.runtime()
    ann = {"vfhotplug.io/vfs": '[{"count": 1, "mode": "dpdk"}]'}
    cfg = pod_config("dpdk-health", annotations=ann, host_network=False)
    uid = cfg.metadata.uid
    pod_id = run_pod(rt, "dpdk-health", annotations=ann, host_network=False)
    rec = RecordStore(stack.plugin_state / "pods").load(uid)
    assert rec is not None
    adj = build_adjustment(rec)  # exactly what the pod's containers get
    runtime = next(m for m in adj.mounts if m.destination == "/var/run/dpdk")
    prefix = dict(adj.env)["VFHOTPLUG_DPDK_FILE_PREFIX"]
    eal = dict(adj.env)["VFHOTPLUG_DPDK_EAL_ARGS"].split()
    # EAL's hugepage files would be <prefix>map_<n> (--no-huge makes none here): this pod's and another's
    (stack.hugepages / f"{prefix}map_0").write_bytes(b"")
    (stack.hugepages / "vfhothermap_0").write_bytes(b"")
    build = testpmd.newest()
    assert build is not None
    log = stack.work / "testpmd.log"
    # testpmd as the pod's app: the pod's runtime folder as its /var/run/dpdk, the pod's EAL arguments
    proc = testpmd.start(
        build,
        [runtime],
        ["-l", "0-1", *eal, "--vdev=net_null0", "--vdev=net_null1"],
        ["--auto-start", "--forward-mode=io", "--total-num-mbufs=16384", "--record-core-cycles"],
        log,
    )
    try:
        eventually(lambda: _health(stack, uid) == "healthy", 30, "healthy from real telemetry")
        metrics = urllib.request.urlopen(f"http://127.0.0.1:{stack.metrics_port}/metrics", timeout=5).read()
        assert f'vfhotplug_datapath_health{{pod="{uid}"}} 0.0'.encode() in metrics
        view = subprocess.run(
            [sys.executable, "-m", "host_side.admin_cli", "pods", "--state-dir", str(stack.plugin_state)],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        line = next(x for x in view.splitlines() if uid in x)
        assert "default/dpdk-health" in line and "ready" in line and "healthy" in line, view
        assert str(rec.vfs[0].guest_pci) in view
    finally:
        testpmd.stop(proc)
    eventually(lambda: _health(stack, uid) == "unhealthy", 15, "unhealthy once testpmd is gone")
    assert read_health(stack.plugin_state / HEALTH_FILE)[uid].reasons[0].startswith("DPDK process gone")

    remove_pod(rt, pod_id)
    assert not Path(runtime.source).exists()
    assert sorted(p.name for p in stack.hugepages.iterdir()) == ["vfhothermap_0"]
    eventually(lambda: uid not in read_health(stack.plugin_state / HEALTH_FILE), 10, "health entry gone")


def _health(stack: SimStack, uid: str) -> str | None:
    entry = read_health(stack.plugin_state / HEALTH_FILE).get(uid)
    return None if entry is None else entry.state
