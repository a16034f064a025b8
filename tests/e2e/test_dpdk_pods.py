"""dpdk-mode pods through CRI. This kernel has no vfio-pci, so the plugin process runs with the named fake
FakeSysfsKernel for its sysfs writes (tests/e2e/fake_kernel_plugin.py); the rest is the production path."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from host_side.pci import PciAddress
from testbed.containerd import Containerd, create_container, exec_sync, pod_config, run_pod, start_container
from testbed.containerd import stop_and_remove_pod as remove_pod
from tests.e2e.conftest import stack_for
from tests.stack import SimStack

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

    cid = create_container(rt, pod_id, cfg, "dpdk-app")
    start_container(rt, cid)
    code, out, _ = exec_sync(rt, cid, ["ls", "/dev/vfio"])
    assert code == 0 and sorted(out.split()) == sorted(["vfio", *groups])
    code, env, _ = exec_sync(rt, cid, ["env"])
    assert f"PCIDEVICE_VFHOTPLUG_IO_NET={','.join(guest_pcis)}" in env.splitlines()
    code, out, _ = exec_sync(rt, cid, ["ls", "/var/run/k8s.cni.cncf.io/devinfo/dp"])
    assert code == 0 and len(out.split()) == 2 and all(p in out for p in guest_pcis)
    code, out, _ = exec_sync(rt, cid, ["cat", "/proc/mounts"])
    assert " /dev/hugepages " in out and " /var/run/dpdk " in out

    remove_pod(rt, pod_id)
    assert [x for x in stack.leases() if x.pod_uid == uid] == []
    # the VFs went back to their kernel driver before the host took them (then the sim unplugged them)
    assert all(not (stack.guest_sysfs / "bus/pci/devices" / p).exists() for p in guest_pcis)
    assert PciAddress.parse(guest_pcis[0])
