"""The lab's VM side, the whole flow: vfhotplug-host (emulated-nic backend, gRPC + mTLS over the guestfwd channel) on
this machine and vfhotplug-nri with containerd in the lab guest. Oracles: the container (CRI exec), the
guest's sysfs (lab agent) and the host's lease table (admin socket)."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from host_side.backends.base import lease_alias
from lab.vm_side.agent_client import GuestError
from lab.vm_side.dpdk_app import HostPacketDump, frames_from, sent_by_testpmd, txonly_argv
from lab.vm_side.pods import PodView, demand
from lab.vm_side.stack import LabStack

pytestmark = pytest.mark.lab


def assert_all_back(stack: LabStack) -> None:
    assert stack.pods.wait_no_leases() == [], "the host still holds leases"
    assert set(stack.lab.guest_pci()) == set(stack.baseline), "the guest's PCI tree differs from before"
    assert stack.lab.hotplug.live_devices(stack.lab.domain) == {}, "libvirt still lists our devices"


def new_devices(stack: LabStack) -> dict[str, dict[str, Any]]:
    return {bdf: dev for bdf, dev in stack.lab.guest_pci().items() if bdf not in stack.baseline}


def test_kernel_pod_gets_two_vfs_with_the_leases_macs(stack: LabStack) -> None:
    view = stack.pods.run("lab-kernel", demand(2, "kernel"))
    try:
        lease_macs = {le.mac for le in view.leases}
        assert len(view.leases) == 2 and all(le.state == "attached" for le in view.leases)
        assert lease_macs <= set(view.interfaces.values()), f"pod sees {view.interfaces}"
        added = new_devices(stack)
        assert set(added) == {le.guest_pci for le in view.leases}, (
            "the guest gained exactly the leased devices"
        )
        assert all(dev["driver"] == "e1000e" and dev["netdevs"] == [] for dev in added.values()), (
            "the netdevs left the guest's namespace for the pod's"
        )
    finally:
        stack.pods.remove(view)
    assert_all_back(stack)


def test_dpdk_pod_gets_a_vfio_device_and_its_group_node(stack: LabStack) -> None:
    view = stack.pods.run("lab-dpdk", demand(1, "dpdk"))
    try:
        assert len(view.leases) == 1 and len(view.devices) == 1
        dev = view.devices[0]
        assert dev["driver"] == "vfio-pci"
        assert isinstance(dev["iommu_group"], int)
        assert str(dev["iommu_group"]) in view.vfio, f"container's /dev/vfio: {view.vfio}"
        assert view.leases[0].mac not in view.interfaces.values(), "a dpdk VF has no netdev in the pod"
        assert set(new_devices(stack)) == {view.leases[0].guest_pci}
    finally:
        stack.pods.remove(view)
    assert_all_back(stack)


def test_more_vfs_than_free_root_ports_fails_and_leaves_nothing(stack: LabStack) -> None:
    ports = stack.lab.spec.root_ports
    with pytest.raises(GuestError, match="pcie-root-port"):
        stack.pods.run("lab-too-many", demand(ports + 1, "kernel"))
    stack.lab.agent.call("pods")  # containerd answers; the failed sandbox is not left running
    assert_all_back(stack)


def test_killed_plugin_during_pod_start_leaves_no_lease_after_restart(stack: LabStack) -> None:
    outcome: dict[str, Any] = {}

    def start_pod() -> None:
        try:
            outcome["view"] = stack.pods.run("lab-killed", demand(2, "kernel"))
        except GuestError as e:
            outcome["error"] = e

    runner = threading.Thread(target=start_pod)
    runner.start()
    # Kill it once the host has started leasing for the pod: the hot-plug is under way.
    stack.lab.wait_guest(
        "a lease for lab-killed",
        lambda: next((le for le in stack.service.leases() if le.pod_name == "default/lab-killed"), None),
    )
    stack.plugin.kill()
    runner.join(120)
    stack.plugin.start()  # Synchronize: the half-done pod is undone and its leases released
    view: PodView | None = outcome.get("view")
    if view is not None:
        # containerd went on without the plugin: the pod exists, but must not keep VFs it never got.
        stack.pods.remove(view)
    assert_all_back(stack)


def test_dpdk_app_in_the_pod_drives_its_vf_and_the_host_sees_its_frames(stack: LabStack) -> None:
    view = stack.pods.run("lab-dpdk-app", demand(1, "dpdk"), dpdk_app=True)
    lease = view.leases[0]
    assert lease.guest_pci is not None
    try:
        pcap = stack.lab.folder / "run" / "dpdk-app.pcap"
        with HostPacketDump(stack.lab.uri, stack.lab.domain, lease_alias(lease.lease_id), pcap):
            res = stack.lab.agent.call(
                "exec",
                timeout_s=90,
                container_id=view.container_id,
                cmd=txonly_argv(lease.guest_pci, 10),
                timeout=60,
            )
        output = res["stdout"] + res["stderr"]
        assert "Probe PCI driver: net_e1000_em" in output, output[-2000:]
        sent = sent_by_testpmd(res["stdout"])
        seen = frames_from(pcap.read_bytes(), lease.mac)
        pcap.unlink()
        # Exact: every frame the app put on the wire through vfio reached the host side of the NIC.
        assert sent is not None and sent > 0, output[-2000:]
        assert seen == sent
    finally:
        stack.pods.remove(view)  # testpmd has exited, so nothing in the guest holds the vfio device
    assert_all_back(stack)
