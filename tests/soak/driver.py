"""The soak: a seeded churn of pods through CRI while the chaos thread injects faults, then recovery,
quiescence and the invariants. Reproducible from its printed seed (the faults' timing against the churn
is not, by nature; the pods, the faults and their order are)."""

from __future__ import annotations

import itertools
import json
import logging
import os
import random
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from cri_api.v1 import api_pb2

from contract.host_api import HostCallError
from host_side.backends.sim import netdev_prefix
from testbed.containerd import Containerd, pod_config, run_pod, stop_and_remove_pod
from tests.soak.background import Background
from tests.soak.chaos import ALL_FAULTS, Chaos, Fault
from tests.soak.invariants import LivePod, Snapshot, check, double_leases
from tests.soak.system import SoakSystem
from tests.soak.workload import Kind, PodPlan, plan_pods
from vm_side.cdi_store import CdiStore
from vm_side.record_store import list_pod_records
from vm_side.release_journal import list_owed_releases

log = logging.getLogger(__name__)
POOLS = ("net", "fast")
VFS_PER_POOL = 6
QUOTA = 7
_FAILED_PAUSE_S = 0.3  # after a failed start: a down containerd must not turn the churn into a busy loop


@dataclass(frozen=True)
class SoakSpec:
    seed: int
    duration_s: float
    max_pods: int = 10_000
    workers: int = 3
    faults: tuple[Fault, ...] = ALL_FAULTS
    quiesce_s: float = 90.0


@dataclass
class SoakReport:
    spec: SoakSpec
    runtime: str
    started: int = 0  # RunPodSandbox answered OK
    failed: int = 0  # RunPodSandbox answered an error
    by_kind: Counter[str] = field(default_factory=Counter)
    faults: Counter[str] = field(default_factory=Counter)
    live_at_end: int = 0
    failed_names: set[str] = field(default_factory=set)  # pods whose RunPodSandbox answered an error
    collected: int = 0  # of those, sandboxes containerd still listed at the end (removed, as kubelet does)
    violations: list[str] = field(default_factory=list)
    checked_while_running: int = 0

    def render(self) -> str:
        lines = [
            f"soak seed={self.spec.seed} runtime={self.runtime} duration={self.spec.duration_s:.0f}s",
            f"pods started {self.started}, failed {self.failed}, by kind {dict(sorted(self.by_kind.items()))}",
            f"faults injected {sum(self.faults.values())}: {dict(sorted(self.faults.items()))}",
            f"lease table checked {self.checked_while_running} times while running; live pods at the end "
            f"{self.live_at_end}; sandboxes of failed starts removed at the end {self.collected}",
            f"violations {len(self.violations)}",
            *(f"  - {v}" for v in self.violations),
        ]
        return "\n".join(lines)


def run_soak(containerd: Containerd, work: Path, spec: SoakSpec) -> SoakReport:
    rng = random.Random(spec.seed)
    plans = plan_pods(random.Random(rng.random()), spec.max_pods, POOLS, QUOTA)
    system = SoakSystem.start(
        containerd,
        work,
        vfs=VFS_PER_POOL,
        pools=POOLS,
        quota=QUOTA,
        plugin_module="tests.e2e.fake_kernel_plugin",
        cdi_spec_dir=containerd.layout.cdi_spec_dir,
    )
    report = SoakReport(spec, containerd.release.name)
    churn = _Churn(system, iter(plans), report)
    chaos = Chaos(system, random.Random(rng.random()), spec.faults)
    watch = _LeaseWatch(system, report)
    try:
        watch.start()
        chaos.start()
        churn.run(spec.workers, time.monotonic() + spec.duration_s)
        chaos.stop()
        report.faults.update({str(k): n for k, n in chaos.counts.items()})
        report.violations += [f"repair failed: {e}" for e in chaos.errors]
        system.restore()
        report.collected = _collect_failed(system, report.failed_names)
        report.violations += _quiesce(system, {p.name: p for p in plans}, spec.quiesce_s, report)
        report.violations += _probe(system)
        watch.stop()
        report.violations += watch.found
    finally:
        watch.stop()
        system.stop()
    return report


class _Churn:
    def __init__(self, system: SoakSystem, plans: Iterator[PodPlan], report: SoakReport) -> None:
        self.system = system
        self.plans = plans
        self.report = report
        self._lock = threading.Lock()

    def run(self, workers: int, until: float) -> None:
        threads = [threading.Thread(target=self._work, args=(until,), daemon=True) for _ in range(workers)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()

    def _next(self) -> PodPlan | None:
        with self._lock:
            return next(self.plans, None)

    def _work(self, until: float) -> None:
        while time.monotonic() < until and (plan := self._next()) is not None:
            rt = self.system.containerd.runtime()
            try:
                pod_id = run_pod(rt, plan.name, annotations=plan.annotations, host_network=False, timeout=30)
            except grpc.RpcError as e:
                log.info("pod %s (%s) failed: %s", plan.name, plan.kind, e.details())
                with self._lock:
                    self.report.failed += 1
                    self.report.failed_names.add(plan.name)
                    self.report.by_kind[f"{plan.kind} failed"] += 1
                time.sleep(_FAILED_PAUSE_S)
                continue
            with self._lock:
                self.report.started += 1
                self.report.by_kind[f"{plan.kind} started"] += 1
            if plan.keep:
                continue
            time.sleep(plan.hold_s)
            _remove(self.system, pod_id, until + 60)


def _remove(system: SoakSystem, pod_id: str, until: float) -> None:
    """Remove the pod, retrying while faults make containerd or the plugin fail the call."""
    while True:
        try:
            stop_and_remove_pod(system.containerd.runtime(), pod_id, timeout=30)
            return
        except grpc.RpcError as e:
            if time.monotonic() > until:
                log.warning("pod %s not removed: %s (left for the final check)", pod_id, e.details())
                return
            time.sleep(0.5)


class _LeaseWatch(Background):
    """No VF leased to two pods at any moment: the host's lease table, polled while the churn runs."""

    def __init__(self, system: SoakSystem, report: SoakReport) -> None:
        super().__init__("lease-watch", join_s=30)
        self.system = system
        self.report = report
        self.found: list[str] = []

    def _run(self) -> None:
        while not self._stop.wait(0.5):
            try:
                with self.system.stack.admin() as admin:
                    leases = admin.list_leases(timeout_s=2)
            except HostCallError:
                continue  # the host is down or frozen: a fault, not a finding
            self.report.checked_while_running += 1
            for v in double_leases(leases):
                if v not in self.found:
                    self.found.append(f"while running: {v}")


def _collect_failed(system: SoakSystem, failed: set[str]) -> int:
    """Remove the sandboxes of pods whose start failed, as kubelet's garbage collection does. A failed start
    can leave one: a start that timed out while containerd was frozen, and containerd 2.1's own bug
    (containerd/containerd#13355: the sandbox of a pod NRI failed stays, and comes back as a ready pod after
    containerd restarts)."""
    rt = system.containerd.runtime()
    items = rt.ListPodSandbox(api_pb2.ListPodSandboxRequest(), timeout=10).items
    stale = [pod.id for pod in items if pod.metadata.name in failed]
    for pod_id in stale:
        _remove(system, pod_id, time.monotonic() + 60)
    return len(stale)


def _quiesce(
    system: SoakSystem, plans: dict[str, PodPlan], timeout_s: float, report: SoakReport
) -> list[str]:
    """Poll until every invariant holds (the journal drains, reconciles finish) or the time is up."""
    deadline = time.monotonic() + timeout_s
    for n in itertools.count():
        snap = snapshot(system, plans)
        found = check(snap)
        report.live_at_end = len(snap.live)
        if not found or time.monotonic() > deadline:
            log.info("quiescence after %d polls: %d violation(s)", n + 1, len(found))
            return found
        time.sleep(1.0)
    raise AssertionError("unreachable")


def snapshot(system: SoakSystem, plans: dict[str, PodPlan]) -> Snapshot:
    stack = system.stack
    rt = system.containerd.runtime()
    items = rt.ListPodSandbox(api_pb2.ListPodSandboxRequest(), timeout=10).items
    live = []
    for pod in items:
        if pod.state != api_pb2.SANDBOX_READY:
            continue
        plan = plans.get(pod.metadata.name)
        asked = plan.vfs if plan is not None else 0
        live.append(
            LivePod(
                pod.metadata.uid, pod.metadata.name, asked, plan is not None and plan.kind is Kind.REFUSED
            )
        )
    with stack.admin() as admin:
        leases = admin.list_leases(timeout_s=10)
    records = list_pod_records(stack.plugin_state)
    netns_macs = {r.pod_uid: _macs(r.netns) for r in records if r.netns}
    prefix = netdev_prefix(stack.guest_sysfs)
    root = frozenset(mac for name, mac in _links(None) if name.startswith(prefix) and not name.endswith("p"))
    return Snapshot(
        live=live,
        leases=leases,
        records=records,
        owed=list_owed_releases(stack.plugin_state),
        pod_netns_macs=netns_macs,
        root_macs=root,
        dpdk_dirs=frozenset(p.name for p in stack.dpdk_root.iterdir())
        if stack.dpdk_root.is_dir()
        else frozenset(),
        cdi_specs=CdiStore(stack.cdi_dir).pod_uids(),
        hugepage_files=sorted(p.name for p in stack.hugepages.iterdir()) if stack.hugepages.is_dir() else [],
    )


def _links(netns: str | None) -> list[tuple[str, str]]:
    cmd = ["ip", "-j", "link", "show"]
    if netns is not None:
        cmd = ["nsenter", f"--net={netns}", *cmd]
    out = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if out.returncode != 0:
        return []
    return [(link["ifname"], link.get("address", "")) for link in json.loads(out.stdout or "[]")]


def _macs(netns: str) -> frozenset[str]:
    return frozenset(mac for _, mac in _links(netns)) if os.path.exists(netns) else frozenset()


def _probe(system: SoakSystem) -> list[str]:
    """After every fault the plugin must be registered again: a fresh 1-VF pod gets its VF."""
    rt = system.containerd.runtime()
    name = "soak-probe"
    uid = pod_config(name).metadata.uid
    try:
        pod_id = run_pod(rt, name, annotations={"vfhotplug.io/vfs": "1"}, host_network=False, timeout=30)
    except grpc.RpcError as e:
        return [f"probe pod after recovery failed: {e.details()}"]
    try:
        with system.stack.admin() as admin:
            held = [lease for lease in admin.list_leases() if lease.pod_uid == uid]
        return [] if len(held) == 1 else [f"probe pod after recovery holds {len(held)} VFs, not 1"]
    finally:
        stop_and_remove_pod(rt, pod_id)
