"""Fixtures for the pod-lifecycle tests: real network namespaces (root) and a simulated guest.

The simulated guest is a netns where SimBackend creates VF netdevs (veth) plus a sysfs tree in a temp
folder that SimBackend writes and FakeSysfsKernel reacts to.
"""

from __future__ import annotations

import json
import os
import subprocess
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from host_side.backends.sim import SimBackend
from tests.pod.fakes import FakeHost, FakeSysfsKernel, make_pool
from vm_side.cdi_store import CdiStore
from vm_side.demand import DemandDefaults
from vm_side.lifecycle import LifecycleConfig, PodLifecycle
from vm_side.netlink import GuestNetlink
from vm_side.pod_steps import PodStep

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root to create network namespaces")


@pytest.fixture
def make_netns() -> Iterator[Callable[[], str]]:
    """Creates named netns (`ip netns add`), all deleted at teardown; returns their paths."""
    made: list[str] = []

    def make() -> str:
        name = f"vfhp-t-{uuid.uuid4().hex[:10]}"
        subprocess.run(["ip", "netns", "add", name], check=True)
        made.append(name)
        return f"/var/run/netns/{name}"

    yield make
    for name in made:
        subprocess.run(["ip", "netns", "del", name], check=False, capture_output=True)


def ip_json(netns: str, *args: str) -> list[dict[str, Any]]:
    """`ip -j` in a netns: the independent oracle for what the kernel holds."""
    out = subprocess.run(
        ["ip", "-n", Path(netns).name, "-j", *args], check=True, capture_output=True, text=True
    )
    return list(json.loads(out.stdout or "[]"))


def links(netns: str) -> dict[str, dict[str, Any]]:
    return {str(link["ifname"]): link for link in ip_json(netns, "-d", "addr", "show")}


@dataclass
class Guest:
    netns: str
    sysfs: FakeSysfsKernel
    backend: SimBackend
    host: FakeHost
    netlink: GuestNetlink
    records: Path
    config: LifecycleConfig

    def lifecycle(
        self, steps: Sequence[PodStep] = (), netlink: GuestNetlink | None = None, cdi: CdiStore | None = None
    ) -> PodLifecycle:
        """A fresh PodLifecycle over the same records: what a restarted plugin sees."""
        nl = netlink or self.netlink
        return PodLifecycle(
            self.host, self.sysfs, nl, self.records, self.config, steps=steps, poll_interval_s=0.05, cdi=cdi
        )


@pytest.fixture
def guest(tmp_path: Path, make_netns: Callable[[], str]) -> Iterator[Guest]:
    netns = make_netns()
    sysroot = tmp_path / "sys"
    sysroot.mkdir()
    sysfs = FakeSysfsKernel(sysroot)
    backend = SimBackend(sysroot, netns=netns)
    pools = {
        "default": make_pool("ens1f0", "0000:3b:00.0", 4),
        "fast": make_pool("ens2f0", "0000:5e:00.0", 2),
    }
    host = FakeHost(backend, backend, pools)
    config = LifecycleConfig(
        defaults=DemandDefaults(pool="default", max_vfs_per_pod=4), run_dir=tmp_path / "run", margin_s=0.2
    )
    yield Guest(netns, sysfs, backend, host, GuestNetlink(netns), tmp_path / "state", config)
    for lease in list(host.leases.values()):  # leave no veth behind even when a test failed
        backend.detach(host.domain, f"ua-vfhp-{lease.lease_id}", 1.0)
