"""Figures of the lab's SR-IOV level: set-up time and one nested run's phases (root; builds under build/lab-d).

Runs lab/sriov/setup.sh (timed; near zero once built), then one outer-guest run, and prints the wall
time of each step of the check inside L1 and the hot-plug phases it measured (attach/detach call and
event wait, guest sees the VF, release of a paused guest). Usage: python -m tests.bench_lab_d
"""

from __future__ import annotations

import subprocess
import sys
import time

from lab.sriov.run import BUILD, REPO, LabError, run_nested


def main() -> None:
    t0 = time.monotonic()
    subprocess.run(["bash", str(REPO / "lab/sriov/setup.sh")], check=True)
    setup_s = time.monotonic() - t0
    try:
        outcome = run_nested(BUILD / "bench")
    except LabError as e:
        sys.exit(f"bench_lab_d: {e}")
    if outcome.result is None:
        sys.exit(f"bench_lab_d: the check wrote no result; see {outcome.out}/l1.log")
    print(f"{'SR-IOV lab':<44} {'seconds':>9}")
    print(f"{'set-up (setup.sh)':<44} {setup_s:9.1f}")
    print(f"{'outer guest, boot to power-off':<44} {outcome.wall_s:9.1f}")
    print(f"{'check inside L1':<44} {outcome.result['total_s']:9.1f}")
    for name, step in outcome.result["steps"].items():
        print(f"{'  step ' + name + ('' if step['ok'] else ' (FAILED)'):<44} {step['seconds']:9.2f}")
    for name, seconds in sorted(outcome.result["timings"].items()):
        print(f"{'  ' + name:<44} {seconds:9.3f}")


if __name__ == "__main__":
    main()
