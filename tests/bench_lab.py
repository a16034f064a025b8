"""Per-phase latency of pod start and release with VFs, from the lab's VM side (root, `make testbed-lab`).

Boots the whole stack once, starts and removes N kernel-mode pods with one VF each, and prints the median of
every phase (host histograms, the plugin's prepare, containerd's RunPodSandbox / removal) and its share of
the whole. Usage: python -m tests.bench_lab [N]
"""

from __future__ import annotations

import statistics
import sys
from collections import defaultdict

from lab.vm_side.pods import demand
from lab.vm_side.report import RELEASE_WHOLE, START_WHOLE, release_phases, start_phases, table
from lab.vm_side.stack import LabStack


def run(pods: int) -> tuple[dict[str, list[float]], dict[str, list[float]], dict[str, float]]:
    start: dict[str, list[float]] = defaultdict(list)
    release: dict[str, list[float]] = defaultdict(list)
    with LabStack() as stack:
        for i in range(pods):
            before = stack.service.timings()
            view = stack.pods.run(f"bench-{i}", demand(1, "kernel"))
            prepare_ms = stack.plugin.prepare_ms(f"default/bench-{i}")
            for label, ms in start_phases(before, stack.service.timings(), view.run_s, prepare_ms):
                start[label].append(ms)
            before = stack.service.timings()
            seconds = stack.pods.remove(view)
            stack.pods.wait_no_leases(view.uid)  # the host's window closes when it let go
            for label, ms in release_phases(before, stack.service.timings(), seconds):
                release[label].append(ms)
        return start, release, dict(stack.phases)


def report(title: str, samples: dict[str, list[float]], whole_label: str) -> str:
    """Medians per phase and their share of the median of `whole_label` (containerd's call)."""
    whole = statistics.median(samples[whole_label])
    rows = [
        [label, str(len(v)), f"{statistics.median(v):.0f}", f"{statistics.median(v) / whole * 100:.0f} %"]
        for label, v in samples.items()
    ]
    return f"{title}\n" + table(["phase", "n", "median ms", "share"], rows)


def main() -> None:
    pods = int(sys.argv[1]) if len(sys.argv) > 1 else 10
    start, release, up = run(pods)
    print("lab up: " + ", ".join(f"{k} {v:.2f} s" for k, v in up.items()))
    print(report(f"pod start with 1 VF, kernel mode ({pods} pods)", start, START_WHOLE))
    print(report("pod release", release, RELEASE_WHOLE))


if __name__ == "__main__":
    main()
