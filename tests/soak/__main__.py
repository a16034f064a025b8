"""`make soak`: the long chaos soak on the test bed's containerd runtimes; prints seed, counts, violations.

Exit status 1 when any run found a violation."""

from __future__ import annotations

import argparse
import logging
import random
import shutil
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from testbed.containerd import RUNTIMES
from testbed.containerd.instance import start_instance
from tests.soak.driver import SoakSpec, run_soak


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tests.soak", description=__doc__)
    p.add_argument("--seed", type=int, default=None, help="replay a run (default: a new random seed)")
    p.add_argument("--minutes", type=float, default=20.0, help="churn time per runtime (default 20)")
    p.add_argument("--pods", type=int, default=10_000, help="stop after this many pods (default 10000)")
    p.add_argument("--workers", type=int, default=3, help="pods started at once (default 3)")
    names = [r.name for r in RUNTIMES]
    p.add_argument(
        "--runtime", choices=names, action="append", help=f"runtimes to soak (default: all of {names})"
    )
    p.add_argument("-v", "--verbose", action="store_true", help="log every pod and fault")
    args = p.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING, format="%(asctime)s %(message)s"
    )
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(1 << 32)
    spec = SoakSpec(seed=seed, duration_s=args.minutes * 60, max_pods=args.pods, workers=args.workers)
    print(f"soak: seed {seed} (replay with --seed {seed})", flush=True)
    failed = False
    for runtime in [r for r in RUNTIMES if not args.runtime or r.name in args.runtime]:
        containerd = start_instance(runtime, "soak")
        work = Path(tempfile.mkdtemp(prefix="vfh-soak-"))
        try:
            report = run_soak(containerd, work, spec)
            print(report.render(), flush=True)
            failed |= bool(report.violations)
        finally:
            containerd.cleanup()
        if report.violations:
            print(f"logs kept in {work}", flush=True)
        else:
            shutil.rmtree(work, ignore_errors=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
