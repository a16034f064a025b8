"""The lab's VM side with what exists below the pod flow: the lab guest runs containerd with an NRI plugin, and the
project's libvirt hot-plug adapter puts emulated e1000e NICs into it, which the guest binds to vfio-pci
through its emulated IOMMU. The guest's own sysfs (read by the lab agent) is the oracle."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

from contract.errors import PreconditionFailed
from contract.pci import PciAddress
from host_side.backends.base import VfRef, VfSettings, lease_alias
from lab.vm_side.lab import Lab

pytestmark = pytest.mark.lab

# Stand-ins: the emulated-nic mode puts a NIC with the lease's MAC in place of the VF, so the VF's own
# address only names the lease in logs.
PF_PCI = PciAddress.parse("0000:3b:00.0")


def vf(index: int) -> VfRef:
    return VfRef("ens1f0", PF_PCI, index, PciAddress(0, 0x3B, 0x10, index))


def added(lab: Lab, before: dict[str, Any], mac: str) -> dict[str, Any] | None:
    """The one device new since `before` if it carries `mac` (None while it has not appeared yet)."""
    new = [dev for bdf, dev in lab.guest_pci().items() if bdf not in before]
    if not new or not new[0]["netdevs"]:
        return None
    assert len(new) == 1, f"expected one new PCI device, got {new}"
    assert new[0]["netdevs"][0]["mac"] == mac
    return new[0]


def test_containerd_runs_recording_nri_plugin(lab: Lab) -> None:
    record = "/tmp/recording.jsonl"
    lab.agent.call(
        "spawn",
        key="recording",
        argv=[
            ".venv/bin/python",
            "-m",
            "tests.nri.recording_plugin",
            "--socket",
            lab.nri_socket,
            "--name",
            "recording",
            "--idx",
            "10",
            "--record",
            record,
        ],
        log_path="/tmp/recording.log",
    )
    lab.wait_guest(
        "the recording plugin's configure event",
        lambda: True if "configure" in lab.agent.call("run", argv=["cat", record])["stdout"] else None,
    )
    pod = lab.agent.call(
        "pod_run", name="rec-pod", annotations={"test.vfhotplug.io/note": "lab"}, host_network=True
    )
    try:
        events = [json.loads(line) for line in lab.agent.call("read", path=record).splitlines()]
        runs = [e for e in events if e["event"] == "run" and e["name"] == "rec-pod"]
        assert len(runs) == 1
        assert runs[0]["annotations"]["test.vfhotplug.io/note"] == "lab"
    finally:
        lab.agent.call("pod_remove", pod_id=pod["id"])
        assert lab.agent.call("signal", key="recording") is not None


def test_hotplug_e1000e_then_vfio_bind_then_unplug(lab: Lab) -> None:
    before = lab.guest_pci()
    mac = "52:54:00:aa:00:01"
    alias = lease_alias("lab-guest-1")
    t0 = time.monotonic()
    plugged = lab.hotplug.attach(lab.domain, vf(0), alias, VfSettings(mac=mac), timeout_s=30)
    dev = lab.wait_guest(f"a NIC with MAC {mac}", lambda: added(lab, before, mac))
    seen_s = time.monotonic() - t0
    assert plugged.guest_pci is not None
    assert dev["bdf"] == str(plugged.guest_pci), "libvirt's address is where the guest sees it"
    assert dev["id"] == "8086:10d3" and dev["driver"] == "e1000e"
    group = dev["iommu_group"]
    assert isinstance(group, int)
    group_members = lab.agent.sh(f"ls /sys/kernel/iommu_groups/{group}/devices").split()
    assert group_members == [dev["bdf"]], "the hot-plugged NIC sits alone in its IOMMU group"

    bdf = dev["bdf"]
    lab.agent.sh(
        f"echo vfio-pci > /sys/bus/pci/devices/{bdf}/driver_override && "
        f"echo {bdf} > /sys/bus/pci/devices/{bdf}/driver/unbind && "
        f"echo {bdf} > /sys/bus/pci/drivers_probe"
    )
    bound = lab.guest_pci()[bdf]
    assert bound["driver"] == "vfio-pci" and bound["netdevs"] == []
    assert lab.agent.sh(f"test -c /dev/vfio/{group} && echo yes").strip() == "yes"

    lab.agent.sh(
        f"echo {bdf} > /sys/bus/pci/drivers/vfio-pci/unbind && echo > /sys/bus/pci/devices/{bdf}/driver_override"
    )
    lab.hotplug.detach(lab.domain, alias, timeout_s=30)
    lab.wait_guest("the NIC leaving", lambda: True if bdf not in lab.guest_pci() else None)
    assert set(lab.guest_pci()) == set(before), "the guest has exactly the devices it had before"
    assert lab.hotplug.live_devices(lab.domain) == {}
    assert lab.agent.sh(f"test -e /dev/vfio/{group} || echo gone").strip() == "gone"
    print(f"hot-plug to guest netdev: {seen_s:.2f} s")


def test_more_devices_than_root_ports_is_refused(lab: Lab) -> None:
    ports = lab.spec.root_ports
    aliases = [lease_alias(f"lab-ports-{i}") for i in range(ports)]
    try:
        for i, alias in enumerate(aliases):
            lab.hotplug.attach(
                lab.domain, vf(i), alias, VfSettings(mac=f"52:54:00:bb:00:{i:02x}"), timeout_s=30
            )
        with pytest.raises(PreconditionFailed, match="pcie-root-ports are in use"):
            lab.hotplug.attach(
                lab.domain,
                vf(ports),
                lease_alias("lab-ports-x"),
                VfSettings(mac="52:54:00:bb:00:ff"),
                timeout_s=30,
            )
    finally:
        for alias in aliases:
            lab.hotplug.detach(lab.domain, alias, timeout_s=30)
    assert lab.hotplug.live_devices(lab.domain) == {}
