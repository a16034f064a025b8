"""Pods with VFs in the lab guest, and what each of them sees, from three independent places: the
container itself (CRI exec), the guest's sysfs (lab agent) and the host service's lease table."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

from host_side.api.wire import LeaseInfo
from lab.vm_side.dpdk_app import APP_CAPABILITIES, APP_MOUNTS
from lab.vm_side.emulated_host import LabHostService
from lab.vm_side.lab import Lab

ANNOTATION = "vfhotplug.io/vfs"
# Prints "name mac" per interface, then "vfio <entry>" per /dev/vfio node: one exec, two views.
_LOOK = (
    "for n in /sys/class/net/*; do echo ${n##*/} $(cat $n/address); done; "
    "for v in /dev/vfio/*; do [ -e $v ] && echo vfio ${v##*/}; done; true"
)


def demand(count: int, mode: str) -> str:
    return json.dumps([{"count": count, "mode": mode}])


@dataclass(frozen=True)
class PodView:
    name: str
    uid: str
    pod_id: str
    container_id: str
    interfaces: dict[str, str]  # in the container: name -> MAC
    vfio: tuple[str, ...]  # /dev/vfio entries in the container
    leases: tuple[LeaseInfo, ...]  # the host's leases for this pod
    devices: tuple[dict[str, Any], ...]  # the guest's PCI devices at the leases' guest addresses
    run_s: float  # RunPodSandbox, hot-plug and binding included
    container_s: float


def parse_look(text: str) -> tuple[dict[str, str], tuple[str, ...]]:
    interfaces: dict[str, str] = {}
    vfio: list[str] = []
    for line in text.splitlines():
        fields = line.split()
        if len(fields) == 2 and fields[0] == "vfio":
            vfio.append(fields[1])
        elif len(fields) == 2:
            interfaces[fields[0]] = fields[1]
    return interfaces, tuple(vfio)


class LabPods:
    def __init__(self, lab: Lab, service: LabHostService) -> None:
        self.lab = lab
        self.service = service

    def run(self, name: str, annotation: str, *, dpdk_app: bool = False, timeout_s: float = 120.0) -> PodView:
        """Creates the pod (own netns) with a busybox container and looks at it from all sides.

        With `dpdk_app` the container can also run the DPDK app of lab.vm_side.dpdk_app."""
        pod = self.lab.agent.call(
            "pod_run",
            timeout_s=timeout_s + 10,
            name=name,
            annotations={ANNOTATION: annotation},
            host_network=False,
            timeout=timeout_s,
        )
        ctr = self.lab.agent.call(
            "container_start",
            timeout_s=timeout_s,
            pod_id=pod["id"],
            name="app",
            command=["sleep", "3600"],
            ro_mounts=APP_MOUNTS if dpdk_app else None,
            add_capabilities=APP_CAPABILITIES if dpdk_app else None,
        )
        return self.look(name, pod, ctr)

    def look(self, name: str, pod: dict[str, Any], ctr: dict[str, Any]) -> PodView:
        res = self.lab.agent.call("exec", container_id=ctr["id"], cmd=["sh", "-c", _LOOK])
        interfaces, vfio = parse_look(res["stdout"])
        leases = tuple(le for le in self.service.leases() if le.pod_uid == pod["uid"])
        pci = self.lab.guest_pci()
        devices = tuple(pci[le.guest_pci] for le in leases if le.guest_pci in pci)
        return PodView(
            name,
            pod["uid"],
            pod["id"],
            ctr["id"],
            interfaces,
            vfio,
            leases,
            devices,
            pod["seconds"],
            ctr["seconds"],
        )

    def remove(self, view: PodView) -> float:
        return float(self.lab.agent.call("pod_remove", timeout_s=120, pod_id=view.pod_id)["seconds"])

    def wait_no_leases(self, pod_uid: str | None = None, timeout_s: float = 30.0) -> list[LeaseInfo]:
        """Waits until the host holds no lease (of `pod_uid`, or at all); returns what is left.

        The plugin may finish a release after containerd returned (journaled), so removal is not the end."""
        deadline = time.monotonic() + timeout_s
        while True:
            leases = [le for le in self.service.leases() if pod_uid is None or le.pod_uid == pod_uid]
            if not leases or time.monotonic() > deadline:
                return leases
            time.sleep(0.2)
