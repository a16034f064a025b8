"""Pod-lifecycle core figures (root): prepare and release latency per mode, FakeHost over the veth
SimBackend, so the numbers are the VM-side cost without gRPC or a real hot-plug. `make bench` calls main()."""

from __future__ import annotations

import statistics
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

from host_side.backends.sim import SimBackend
from tests.pod.fakes import FakeHost, FakeSysfsKernel, make_pool
from vm_side.demand import ANNOTATION, DemandDefaults
from vm_side.lifecycle import LifecycleConfig, PodLifecycle
from vm_side.netlink import GuestNetlink

ROUNDS = 20


def _netns() -> str:
    name = f"vfhp-b-{uuid.uuid4().hex[:10]}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    return name


def _pct(values: list[float], q: float) -> float:
    return sorted(values)[min(len(values) - 1, int(q * len(values)))]


def _run(mode: str, vfs: int) -> tuple[list[float], list[float], list[float]]:
    guest, pod = _netns(), _netns()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            root = Path(tmp)
            sysfs = FakeSysfsKernel(root / "sys")
            backend = SimBackend(root / "sys", netns=guest)
            host = FakeHost(backend, backend, {"default": make_pool("ens1f0", "0000:3b:00.0", 4)})
            config = LifecycleConfig(DemandDefaults(pool="default"), run_dir=root / "run")
            life = PodLifecycle(
                host, sysfs, GuestNetlink(guest), root / "state", config, poll_interval_s=0.02
            )
            annotation = {ANNOTATION: f'[{{"count": {vfs}, "mode": "{mode}"}}]'}
            prep, adj, rel = [], [], []
            for i in range(ROUNDS):
                t0 = time.perf_counter()
                life.prepare(
                    f"b{i}", f"bench-{i}", f"/var/run/netns/{pod}", annotation, time.monotonic() + 10
                )
                t1 = time.perf_counter()
                life.adjustment(f"b{i}")
                t2 = time.perf_counter()
                life.release(f"b{i}")
                t3 = time.perf_counter()
                prep.append(t1 - t0)
                adj.append(t2 - t1)
                rel.append(t3 - t2)
            assert host.leases == {}, "bench leaked leases"
            return prep, adj, rel
    finally:
        for ns in (guest, pod):
            subprocess.run(["ip", "netns", "del", ns], check=False)


def _no_annotation() -> float:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        backend = SimBackend(root / "sys")
        host = FakeHost(backend, backend, {})
        config = LifecycleConfig(DemandDefaults(pool="default"), run_dir=root / "run")
        life = PodLifecycle(host, FakeSysfsKernel(root / "sys"), GuestNetlink(), root / "state", config)
        times = []
        for i in range(1000):
            t0 = time.perf_counter()
            life.prepare(f"n{i}", "plain", "/var/run/netns/x", {"app": "web"}, time.monotonic() + 2)
            times.append(time.perf_counter() - t0)
        assert host.calls == []
        return statistics.median(times)


def main() -> None:
    t0 = time.perf_counter()
    print(f"pod-core bench ({ROUNDS} rounds each; FakeHost + SimBackend, no gRPC)")
    print(f"  no annotation: prepare median {_no_annotation() * 1e6:.1f} us (no host call)")
    for mode, vfs in (("kernel", 1), ("kernel", 2), ("dpdk", 1)):
        prep, adj, rel = _run(mode, vfs)
        print(
            f"  {mode:6} x{vfs}: prepare median {statistics.median(prep) * 1e3:6.1f} ms"
            f" p99 {_pct(prep, 0.99) * 1e3:6.1f} ms"
            f" | adjustment median {statistics.median(adj) * 1e6:6.0f} us"
            f" | release median {statistics.median(rel) * 1e3:6.1f} ms p99 {_pct(rel, 0.99) * 1e3:6.1f} ms"
        )
    print(f"  total {time.perf_counter() - t0:.1f} s")


if __name__ == "__main__":
    main()
