"""OCI hooks figures (root): container start-to-running through the real runc (`runc run -d` returns once
the container runs), with and without our hooks in config.json, against the real host service (sim
backend). `make bench` calls main().

- plain: no hooks, no annotation (the baseline)
- hooks, no annotation: the documented createRuntime/poststop hooks on a container asking for no VFs
  (their fast path); `vfhotplug-hook prepare` only adds hooks to bundles that ask for VFs, so such
  containers normally pay nothing
- 1 VF: `vfhotplug-hook prepare` (host attach, wait, files, config.json) plus `runc run -d` (createRuntime
  moves the VF into the container's netns)
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import time
from collections.abc import Callable, Sequence

from tests.oci import bed as oci_bed


def _median_ms(samples: list[float]) -> float:
    return statistics.median(samples) * 1e3


def _rounds(n: int, once: Callable[[int], float]) -> list[float]:
    once(-1)  # warm-up: page cache, pyc files
    return [once(i) for i in range(n)]


def main(argv: Sequence[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="bench_oci")
    p.add_argument("--rounds", type=int, default=15)
    args = p.parse_args(argv)
    why = oci_bed.missing()
    if why:
        print(f"oci bench skipped: {why}")
        return
    t0 = time.perf_counter()
    with oci_bed.bed() as b:

        def start(name: str, annotation: str | None, hooks: bool, prepare: bool) -> Callable[[int], float]:
            def once(i: int) -> float:
                cid = f"{name}{i + 1}"
                bundle = b.bundle(cid, annotation)
                if hooks:
                    config = json.loads((bundle / "config.json").read_text())
                    config["hooks"] = {
                        stage: [{"path": str(b.hook), "args": ["vfhotplug-hook", *b.hook_args(), stage]}]
                        for stage in ("createRuntime", "poststop")
                    }
                    (bundle / "config.json").write_text(json.dumps(config))
                began = time.perf_counter()
                if prepare:
                    b.hook_cmd("prepare", "--id", cid, "--hook-path", str(b.hook), str(bundle))
                b.runc("run", "-d", "--bundle", str(bundle), cid)
                took = time.perf_counter() - began
                b.runc("delete", "-f", cid)
                return took

            return once

        plain = _rounds(args.rounds, start("plain", None, hooks=False, prepare=False))
        hooked = _rounds(args.rounds, start("hooked", None, hooks=True, prepare=False))
        one_vf = _rounds(max(args.rounds // 2, 3), start("vf", "1", hooks=False, prepare=True))
        assert b.host.leases() == [], "the 1-VF containers left leases behind"
    base = _median_ms(plain)
    version = subprocess.run([str(oci_bed.RUNC), "--version"], capture_output=True, text=True).stdout.split()[
        2
    ]
    print(f"oci hooks bench (runc {version}, real host service on the sim backend, medians)")
    print(f"  plain runc run -d           {base:7.1f} ms  ({len(plain)} runs)")
    print(
        f"  hooks, no annotation        {_median_ms(hooked):7.1f} ms  ratio {_median_ms(hooked) / base:.2f}"
    )
    print(f"  1 VF: prepare + runc run -d {_median_ms(one_vf):7.1f} ms  ({len(one_vf)} runs)")
    print(f"  total {time.perf_counter() - t0:.1f} s")


if __name__ == "__main__":
    main()
