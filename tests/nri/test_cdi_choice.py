"""The CDI choice through the real handlers and the stub's wire encoder: a dpdk pod's containers get CDI
device names from containerd 2.1 (NRI v0.8) and nodes, env and mounts inline from containerd 1.7.24
(NRI v0.6.1). The record is a ready pod's, as a prepare leaves it (tests/pod prove prepare)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from contract.host_api import GrantedVf, VfRequest
from nri_plugin.nri_pb import nri_pb2 as nri
from nri_plugin.plugin import VfPlugin
from tests.nri.event_plugins import Wires, pod_pb
from tests.nri.fake_runtime import FakeRuntime
from tests.nri.runtime_peers import Containerd21
from tests.pod.test_adjustment import REC
from vm_side.demand import DemandDefaults
from vm_side.lifecycle import LifecycleConfig, PodLifecycle
from vm_side.netlink import GuestNetlink
from vm_side.sysfs import GuestSysfs


class NoHost:
    """CreateContainer must never call the host."""

    def attach(
        self, pod_uid: str, pod_name: str, requests: Sequence[VfRequest], request_id: str, timeout_s: float
    ) -> list[GrantedVf]:
        raise AssertionError("attach at CreateContainer")

    def release(self, pod_uid: str, request_id: str, timeout_s: float) -> None:
        raise AssertionError("release at CreateContainer")

    def sync(self, live_pod_uids: Sequence[str], timeout_s: float) -> None:
        raise AssertionError("sync at CreateContainer")


def _plugin(tmp_path: Path) -> VfPlugin:
    config = LifecycleConfig(DemandDefaults(pool="default"), run_dir=tmp_path / "run")
    life = PodLifecycle(
        NoHost(), GuestSysfs(tmp_path / "sys"), GuestNetlink(None), tmp_path / "state", config
    )
    life.store.save(REC)  # uid u1: two dpdk VFs in IOMMU group 16, one kernel VF
    return VfPlugin(life)


def _create(rt: FakeRuntime, uid: str) -> nri.ContainerAdjustment:
    req = nri.CreateContainerRequest(pod=pod_pb(uid), container=nri.Container(id="c-" + uid))
    reply = rt.call("CreateContainer", req.SerializeToString())
    assert reply.code == 0, reply.message
    return nri.CreateContainerResponse.FromString(reply.payload).adjust


def test_containerd_21_gets_the_pods_cdi_devices(wires: Wires, tmp_path: Path) -> None:
    rt, _ = wires.connect(Containerd21, _plugin(tmp_path))
    rt.handshake()
    adj = _create(rt, "u1")
    assert [d.name for d in adj.CDI_devices] == ["vfhotplug.io/vf=u1-net1", "vfhotplug.io/vf=u1-net2"]
    assert not adj.linux.devices and not adj.env and not adj.mounts  # the runtime reads them from the spec
    assert "vfhotplug.io/status" in adj.annotations


def test_containerd_1724_gets_nodes_env_and_mounts_inline(wires: Wires, tmp_path: Path) -> None:
    rt, _ = wires.connect(FakeRuntime, _plugin(tmp_path))
    rt.configure(runtime_name="containerd", runtime_version="1.7.24~ds1")
    adj = _create(rt, "u1")
    assert not adj.CDI_devices
    assert [d.path for d in adj.linux.devices] == ["/dev/vfio/vfio", "/dev/vfio/16"]
    assert {kv.key: kv.value for kv in adj.env}["VFHOTPLUG_COUNT"] == "3"
    assert "/var/run/k8s.cni.cncf.io/devinfo/dp" in [m.destination for m in adj.mounts]


def test_a_pod_without_vfs_gets_nothing_on_either(wires: Wires, tmp_path: Path) -> None:
    rt, _ = wires.connect(Containerd21, _plugin(tmp_path))
    rt.handshake()
    adj = _create(rt, "other")
    assert not adj.CDI_devices and not adj.linux.devices and not adj.env
