"""Pod start through CRI on the real containerd, with and without vfhotplug (issues: NRI core, pod lifecycle).

`python -m tests.bench_pods [PODS]` as root after `make testbeds`. Uses its own containerd instance. Prints:
- RunPodSandbox without the plugin vs with the plugin registered and no VF demand (median, p95, ratio);
- RunPodSandbox with 1 VF: cold attach, and from the warm pool (ratio against no plugin; the plugin's own
  handler time from its log, p99 against NRI's 2 s budget);
- a churn of PODS*2 pods, 10 at a time, with 1 VF each vs without the plugin (ratio; leaks counted);
- the plugin's RSS after all of it.
The VF side is the `sim` backend (veth netdevs stand in for VFs): a figure for our software, not for a NIC.
"""

from __future__ import annotations

import os
import re
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from testbed.containerd import CONTAINERD_1_7, Containerd, run_pod, stop_and_remove_pod
from tests.stack import SimStack

ONE = {"vfhotplug.io/vfs": "1"}


def _stats(seconds: list[float]) -> tuple[float, float, float]:
    ms = sorted(s * 1000 for s in seconds)

    def pick(q: float) -> float:
        return ms[min(len(ms) - 1, round(q * (len(ms) - 1)))]

    return statistics.median(ms), pick(0.95), pick(0.99)


def _line(name: str, seconds: list[float], base: float | None = None) -> str:
    med, p95, _ = _stats(seconds)
    ratio = f"   ratio {med / base:5.2f}" if base else ""
    return f"{name:<44} n={len(seconds):<4} median {med:7.1f} ms   p95 {p95:7.1f} ms{ratio}"


def _pods(
    rt: object, prefix: str, n: int, ann: dict[str, str] | None, before: Callable[[], None] | None = None
) -> list[float]:
    out = []
    for i in range(n):
        if before:
            before()
        t = time.perf_counter()
        pod = run_pod(rt, f"{prefix}-{i}", annotations=ann, host_network=False)  # type: ignore[arg-type]
        out.append(time.perf_counter() - t)
        stop_and_remove_pod(rt, pod)  # type: ignore[arg-type]
    return out


def _churn(rt: object, prefix: str, n: int, ann: dict[str, str] | None) -> float:
    def one(i: int) -> None:
        pod = run_pod(rt, f"{prefix}-{i}", annotations=ann, host_network=False)  # type: ignore[arg-type]
        stop_and_remove_pod(rt, pod)  # type: ignore[arg-type]

    t = time.perf_counter()
    with ThreadPoolExecutor(10) as pool:
        list(pool.map(one, range(n)))
    return time.perf_counter() - t


def _rss_mb(pid: int) -> float:
    text = Path(f"/proc/{pid}/status").read_text()
    m = re.search(r"VmRSS:\s+(\d+) kB", text)
    return int(m[1]) / 1024 if m else float("nan")


def _handler_ms(log: Path) -> list[float]:
    return [float(m[1]) for m in re.finditer(r"ready with \d+ VFs in (\d+) ms", log.read_text())]


def main(pods: int = 50) -> None:
    cd = Containerd(CONTAINERD_1_7, "benchpods")
    work = Path(tempfile.mkdtemp(prefix="vfh-bench-"))
    print(
        f"machine: {os.cpu_count()} cores, {os.sysconf('SC_PHYS_PAGES') * os.sysconf('SC_PAGE_SIZE') >> 30} GiB; "
        f"containerd test bed; VFs from the sim backend; {pods} pods per row"
    )
    cd.start()
    rt = cd.runtime()
    stack = SimStack(work, cd.nri_socket, vfs=32, warm=0, warm_refill_s=0.1)
    try:
        _pods(rt, "warmup", 5, None)
        bare = _pods(rt, "bare", pods, None)
        base = _stats(bare)[0]
        print(_line("RunPodSandbox, no plugin", bare))
        stack.start()
        assert stack.plugin_proc is not None
        idle = _pods(rt, "idle", pods, None)
        print(_line("RunPodSandbox, plugin, no VF demand", idle, base))
        cold = _pods(rt, "cold", pods, ONE)
        print(_line("RunPodSandbox, 1 VF, cold attach", cold, base))
        # warm pool: restart the host with spares; wait for the spare before each pod
        stack.stop()
        stack.warm = 2
        stack.start()

        def spare_ready() -> None:
            deadline = time.monotonic() + 10
            while not any(x.state == "warm" for x in stack.leases()) and time.monotonic() < deadline:
                time.sleep(0.02)

        log_start = len(_handler_ms(work / "nri.log"))
        warm = _pods(rt, "warm", pods, ONE, before=spare_ready)
        print(_line("RunPodSandbox, 1 VF, warm pool", warm, base))
        handler = _handler_ms(work / "nri.log")[log_start:]
        if handler:
            med, _, p99 = _stats([h / 1000 for h in handler])
            print(
                f"{'  plugin handler (warm), from its log':<44} median {med:7.1f} ms   p99 {p99:7.1f} ms of 2000 ms"
            )
        n = 2 * pods
        stack.stop()
        t_bare = _churn(rt, "churn-bare", n, None)
        stack.warm = 0
        stack.start()
        t_vf = _churn(rt, "churn-vf", n, ONE)
        leaks = [x for x in stack.leases() if x.pod_uid]
        print(
            f"{f'churn {n} pods, 10 at a time':<44} no plugin {t_bare:6.2f} s   1 VF each {t_vf:6.2f} s   "
            f"ratio {t_vf / t_bare:5.2f}   leaked leases {len(leaks)}"
        )
        assert stack.plugin_proc is not None
        print(f"{'plugin RSS after all pods above':<44} {_rss_mb(stack.plugin_proc.pid):7.1f} MB")
    finally:
        cd.remove_all_pods()
        stack.stop()
        cd.cleanup()


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 50)
