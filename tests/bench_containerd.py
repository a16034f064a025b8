"""Figures of the containerd test bed: start/stop of an instance and RunPodSandbox latency.

Run as root after `make testbed-containerd`: `.venv/bin/python -m tests.bench_containerd [PODS]`.
Uses its own instance ("bench"), so it can run beside the tests' instance.
"""

from __future__ import annotations

import os
import statistics
import sys
import time
from collections.abc import Callable

from testbed.containerd import CONTAINERD_1_7, Containerd, run_pod, stop_and_remove_pod


def _timed(fn: Callable[[], object]) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def _figures(name: str, seconds: list[float]) -> str:
    ms = sorted(s * 1000 for s in seconds)
    p95 = ms[min(len(ms) - 1, round(0.95 * (len(ms) - 1)))]
    return f"{name:<36} n={len(ms):<4} median {statistics.median(ms):7.1f} ms   p95 {p95:7.1f} ms"


def main(pods: int = 20) -> None:
    cd = Containerd(CONTAINERD_1_7, "bench")
    print(f"machine: {os.cpu_count()} cores; containerd test bed, {pods} pods per kind")
    try:
        print(f"{'start (sockets + images)':<36} {_timed(cd.start) * 1000:7.1f} ms")
        rt = cd.runtime()
        for host_network in (True, False):
            kind = "host network" if host_network else "own netns (cni-veth)"
            run, remove = [], []
            for i in range(pods):
                name = f"bench-{'h' if host_network else 'n'}{i}"
                started = time.perf_counter()
                pod = run_pod(rt, name, host_network=host_network)
                run.append(time.perf_counter() - started)
                started = time.perf_counter()
                stop_and_remove_pod(rt, pod)
                remove.append(time.perf_counter() - started)
            print(_figures(f"RunPodSandbox, {kind}", run))
            print(_figures(f"Stop+Remove, {kind}", remove))
        print(f"{'restart':<36} {_timed(cd.restart) * 1000:7.1f} ms")
    finally:
        print(f"{'cleanup (stop + host paths)':<36} {_timed(cd.cleanup) * 1000:7.1f} ms")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 20)
