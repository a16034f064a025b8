"""Figures of the containerd test bed: start/stop of an instance and RunPodSandbox latency.

Run as root after `make testbed-containerd`: `.venv/bin/python -m tests.bench_containerd [--runtime NAME]
[--pods N]` (default: every release of the test bed). Uses its own instance ("bench"), so it can run
beside the tests' instance. Every round starts one pod of each kind, in an order that flips every 5 rounds.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable, Sequence

from testbed.containerd import Containerd, Runtime, run_pod, stop_and_remove_pod
from tests.bench import add_runtime_option, chosen_runtimes, machine


def _timed(fn: Callable[[], object]) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def _figures(name: str, seconds: list[float]) -> str:
    ms = sorted(s * 1000 for s in seconds)
    p95 = ms[min(len(ms) - 1, round(0.95 * (len(ms) - 1)))]
    return f"{name:<36} n={len(ms):<4} median {statistics.median(ms):7.1f} ms   p95 {p95:7.1f} ms"


def main(argv: Sequence[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="bench_containerd")
    add_runtime_option(p)
    p.add_argument("--pods", type=int, default=20, help="pods per kind")
    args = p.parse_args(argv)
    print(machine())
    for runtime in chosen_runtimes(args):
        _bench_runtime(runtime, args.pods)


def _bench_runtime(runtime: Runtime, pods: int) -> None:
    cd = Containerd(runtime, "bench")
    print(f"\n-- {runtime.name} ({runtime.prefix}), {pods} pods per kind")
    try:
        print(f"{'start (sockets + images)':<36} {_timed(cd.start) * 1000:7.1f} ms")
        rt = cd.runtime()
        run: dict[bool, list[float]] = {True: [], False: []}
        remove: dict[bool, list[float]] = {True: [], False: []}
        for i in range(pods):
            for host_network in (True, False) if i // 5 % 2 == 0 else (False, True):
                started = time.perf_counter()
                pod = run_pod(rt, f"bench-{'h' if host_network else 'n'}{i}", host_network=host_network)
                run[host_network].append(time.perf_counter() - started)
                started = time.perf_counter()
                stop_and_remove_pod(rt, pod)
                remove[host_network].append(time.perf_counter() - started)
        for host_network in (True, False):
            kind = "host network" if host_network else "own netns (cni-veth)"
            print(_figures(f"RunPodSandbox, {kind}", run[host_network]))
            print(_figures(f"Stop+Remove, {kind}", remove[host_network]))
        print(f"{'restart':<36} {_timed(cd.restart) * 1000:7.1f} ms")
    finally:
        print(f"{'cleanup (stop + host paths)':<36} {_timed(cd.cleanup) * 1000:7.1f} ms")


if __name__ == "__main__":
    main()
