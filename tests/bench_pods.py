"""The NRI path: RunPodSandbox through CRI on the real containerd, with and without vfhotplug (issue #11).

`python -m tests.bench_pods [--runtime NAME] [--blocks N] [--pods N] [--rss-pods N]` as root after
`make testbeds`; NAME is a release of the test bed (default: every one).
Uses its own containerd instance. Every ratio comes from alternating blocks in one run (no plugin, plugin
without demand, 1 VF from the warm pool, ...), so load drift on the machine hits every row alike. Prints the
machine, each figure beside its target, the plugin's per-phase breakdown from its log, and its RSS after
`--rss-pods` 1-VF pods. The VF side is the `sim` backend (veth netdevs stand in for VFs): a figure for our
software and the kernel's netns move, not for a NIC.
"""

from __future__ import annotations

import argparse
import re
import signal
import statistics
import subprocess
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from testbed.containerd import Containerd, Runtime, RuntimeStub, run_pod, stop_and_remove_pod
from tests.bench import add_runtime_option, chosen_runtimes, machine
from tests.stack import SimStack

ONE = {"vfhotplug.io/vfs": "1"}
WARM_TARGET = 1.15
RSS_TARGET_MB = 45.0
_PHASES = re.compile(r"ready with \d+ VFs in (\d+) ms, .*\(ms: ([^)]*)\)")


def _median_ms(seconds: list[float]) -> float:
    return statistics.median(seconds) * 1000


def _p(seconds: list[float], q: float) -> float:
    ms = sorted(s * 1000 for s in seconds)
    return ms[min(len(ms) - 1, round(q * (len(ms) - 1)))]


def _row(name: str, seconds: list[float], base: float | None = None, target: str = "") -> str:
    med = _median_ms(seconds)
    ratio = f"   ratio {med / base:5.2f}" if base else ""
    return f"{name:<40} n={len(seconds):<4} median {med:7.1f} ms   p95 {_p(seconds, 0.95):7.1f} ms{ratio}{target}"


def _pods(
    rt: RuntimeStub, prefix: str, n: int, ann: dict[str, str] | None, before: Callable[[], None]
) -> list[float]:
    out = []
    for i in range(n):
        before()
        t = time.perf_counter()
        pod = run_pod(rt, f"{prefix}-{i}", annotations=ann, host_network=False)
        out.append(time.perf_counter() - t)
        stop_and_remove_pod(rt, pod)
    return out


def _churn(rt: RuntimeStub, prefix: str, n: int, ann: dict[str, str] | None) -> float:
    def one(i: int) -> None:
        stop_and_remove_pod(rt, run_pod(rt, f"{prefix}-{i}", annotations=ann, host_network=False))

    t = time.perf_counter()
    with ThreadPoolExecutor(10) as pool:
        list(pool.map(one, range(n)))
    return time.perf_counter() - t


def _rss_mb(pid: int) -> float:
    m = re.search(r"VmRSS:\s+(\d+) kB", Path(f"/proc/{pid}/status").read_text())
    return int(m[1]) / 1024 if m else float("nan")


def _phases(log: Path, offset: int) -> dict[str, list[float]]:
    """Per-phase ms of every pod the plugin made ready since `offset`, from its log lines."""
    out: dict[str, list[float]] = defaultdict(list)
    for m in _PHASES.finditer(log.read_text()[offset:]):
        out["plugin handler, whole"].append(float(m[1]))
        for part in m[2].split(", "):
            name, _, ms = part.rpartition(" ")
            out[name].append(float(ms))
    return out


def _breakdown(title: str, phases: dict[str, list[float]]) -> None:
    print(f"  {title}, median ms per phase (plugin log):")
    for name, values in phases.items():
        print(f"    {name:<36} {statistics.median(values):7.1f}")


class _Bench:
    def __init__(self, cd: Containerd, stack: SimStack, pods: int) -> None:
        self.rt = cd.runtime()
        self.stack = stack
        self.pods = pods
        self.log = stack.work / "nri.log"

    def plugin(self, on: bool) -> None:
        running = self.stack.plugin_proc is not None and self.stack.plugin_proc.poll() is None
        if on and not running:
            self.stack.start_plugin()
        elif not on and running:
            self.stack.kill_plugin(signal.SIGTERM)

    def spare_ready(self) -> None:
        deadline = time.monotonic() + 10
        while not any(x.state == "warm" for x in self.stack.leases()) and time.monotonic() < deadline:
            time.sleep(0.02)

    def no_spare(self) -> None:
        pass

    def blocks(
        self, rounds: int, variants: Sequence[tuple[str, bool, dict[str, str] | None, Callable[[], None]]]
    ) -> tuple[dict[str, list[float]], dict[str, dict[str, list[float]]]]:
        """`rounds` rounds of one block per variant (name, plugin on, annotation, wait before each pod)."""
        times: dict[str, list[float]] = defaultdict(list)
        phases: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
        for r in range(rounds):
            for name, on, ann, before in variants:
                self.plugin(on)
                offset = self.log.stat().st_size if self.log.exists() else 0
                times[name] += _pods(self.rt, f"{name.split()[0]}{r}", self.pods, ann, before)
                for phase, values in _phases(self.log, offset).items():
                    phases[name][phase] += values
        return times, phases


def _version(runtime: Runtime) -> str:
    binary = runtime.prefix / "fs/usr/bin/containerd"
    out = subprocess.run([str(binary), "--version"], capture_output=True, text=True)
    return out.stdout.strip() or f"{runtime.name} from {runtime.prefix}"


def main(argv: Sequence[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="bench_pods")
    add_runtime_option(p)
    p.add_argument("--blocks", type=int, default=4, help="rounds of alternating blocks")
    p.add_argument("--pods", type=int, default=15, help="pods per block")
    p.add_argument("--rss-pods", type=int, default=200, help="1-VF pods before the plugin's RSS is read")
    args = p.parse_args(argv)
    print(machine())
    for runtime in chosen_runtimes(args):
        _bench_runtime(runtime, args)


def _bench_runtime(runtime: Runtime, args: argparse.Namespace) -> None:
    print(
        f"\n-- {_version(runtime)}; VFs from the sim backend; {args.blocks} rounds of alternating blocks, "
        f"{args.pods} pods per block"
    )
    cd = Containerd(runtime, "benchpods")
    work = Path(tempfile.mkdtemp(prefix="vfh-bench-"))
    cd.start()
    stack = SimStack(work, cd.nri_socket, vfs=32, warm=2, warm_refill_s=0.1)
    try:
        stack.start()
        bench = _Bench(cd, stack, args.pods)
        _pods(bench.rt, "warmup", 5, ONE, bench.spare_ready)
        times, phases = bench.blocks(
            args.blocks,
            [
                ("no plugin", False, None, bench.no_spare),
                ("plugin, no VF demand", True, None, bench.no_spare),
                ("1 VF, warm pool", True, ONE, bench.spare_ready),
            ],
        )
        base = _median_ms(times["no plugin"])
        print(_row("RunPodSandbox, no plugin", times["no plugin"]))
        print(_row("RunPodSandbox, plugin, no VF demand", times["plugin, no VF demand"], base))
        warm = times["1 VF, warm pool"]
        ok = "meets" if _median_ms(warm) / base <= WARM_TARGET else "MISSES"
        print(_row("RunPodSandbox, 1 VF, warm pool", warm, base, f"   target <= {WARM_TARGET} ({ok})"))
        _breakdown("1 VF, warm pool", phases["1 VF, warm pool"])
        # Cold attach: the same alternation against a host without spares.
        bench.plugin(False)
        stack.stop()
        stack.warm = 0
        stack.start_host()
        cold_times, cold_phases = bench.blocks(
            max(args.blocks // 2, 1),
            [("no plugin", False, None, bench.no_spare), ("1 VF, cold attach", True, ONE, bench.no_spare)],
        )
        cold_base = _median_ms(cold_times["no plugin"])
        print(_row("RunPodSandbox, no plugin (cold rounds)", cold_times["no plugin"]))
        print(_row("RunPodSandbox, 1 VF, cold attach", cold_times["1 VF, cold attach"], cold_base))
        _breakdown("1 VF, cold attach", cold_phases["1 VF, cold attach"])
        churn: dict[str, float] = defaultdict(float)
        for r in range(2):
            for name, on, ann in (("no plugin", False, None), ("1 VF each", True, ONE)):
                bench.plugin(on)
                churn[name] += _churn(bench.rt, f"churn{r}{'v' if ann else 'b'}", 2 * args.pods, ann)
        print(
            f"{f'churn 2x{2 * args.pods} pods, 10 at a time':<40} no plugin {churn['no plugin']:6.2f} s   "
            f"1 VF each {churn['1 VF each']:6.2f} s   ratio {churn['1 VF each'] / churn['no plugin']:5.2f}"
        )
        bench.plugin(False)
        bench.plugin(True)  # a fresh process, so its RSS is after exactly --rss-pods pods
        assert stack.plugin_proc is not None
        _churn(bench.rt, "rss", args.rss_pods, ONE)
        leaks = [x for x in stack.leases() if x.pod_uid]
        rss = _rss_mb(stack.plugin_proc.pid)
        ok = "meets" if rss <= RSS_TARGET_MB else "MISSES"
        print(
            f"{f'plugin RSS after {args.rss_pods} 1-VF pods':<40} {rss:7.1f} MB   target <= {RSS_TARGET_MB:.0f} MB "
            f"({ok}); leaked leases {len(leaks)}"
        )
    finally:
        cd.remove_all_pods()
        stack.stop()
        cd.cleanup()


if __name__ == "__main__":
    main()
