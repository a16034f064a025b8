"""OCI hooks figures (root): container start-to-running through the real runc (`runc run -d` returns once
the container runs) and podman, with and without our hooks, against the real host service (sim backend).
`make bench` calls main(); `python -m tests.bench_oci --blocks 4 --per-block 5` runs it alone.

Variants, compared in alternating blocks (ABAB...) in one run so load drift hits all alike:
- runc plain: no hooks, no annotation (the baseline)
- runc hooked: the README's createRuntime/poststop hooks through the sh front on a container asking for
  no VFs, as when hooks are configured for every container (target: <= 1.05x plain)
- runc 1 VF: `vfhotplug-hook prepare` (host attach, wait, the move into the netns it pins, files,
  config.json) plus `runc run -d` (no createRuntime hook: the container joins that netns) (target: <=
  plain + 150 ms)
- podman (when installed): an empty hooks dir, the shipped hooks.d JSON on a container without the
  annotation (filtered out by podman), and 1 VF (target: <= plain + 200 ms)
Then where a 1-VF runc start's time goes, from the hook's own per-stage time lines in its log.
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from tests.oci import bed as oci_bed
from tests.oci.podman import PODMAN, Podman, podman_bed
from tests.oci.podman import missing as podman_missing

Variant = Callable[[int], float]
_TIME_LINE = re.compile(r"container (vf\d+): .*?(prepare|createRuntime) took (\d+) ms in-process: (.*)$")


def _median_ms(samples: Sequence[float]) -> float:
    return statistics.median(samples) * 1e3


def _blocks(blocks: int, per_block: int, variants: Mapping[str, Variant]) -> dict[str, list[float]]:
    """`blocks` rounds; in each, every variant runs `per_block` times in a row (A..A B..B A..A B..B)."""
    for once in variants.values():
        once(-1)  # warm-up: page cache, pyc files
    out: dict[str, list[float]] = {name: [] for name in variants}
    n = 0
    for _ in range(blocks):
        for name, once in variants.items():
            for _ in range(per_block):
                out[name].append(once(n))
                n += 1
    return out


def _runc_variant(
    b: oci_bed.Bed, name: str, annotation: str | None, hooks: bool, phases: dict[str, list[float]]
) -> Variant:
    """Start-to-running of one container; with an annotation, `prepare` counts too (it is part of it)."""

    def once(i: int) -> float:
        cid = f"{name}{i + 1}"
        bundle = b.bundle(cid, annotation)
        if hooks:
            b.add_hooks(bundle)
        began = time.perf_counter()
        if annotation is not None:
            b.hook_cmd("prepare", "--id", cid, "--hook-path", str(b.hook), str(bundle))
            phases.setdefault("prepare process, wall", []).append(time.perf_counter() - began)
        ran = time.perf_counter()
        b.runc("run", "-d", "--bundle", str(bundle), cid)
        done = time.perf_counter()
        phases.setdefault(f"{name}: runc run -d, wall", []).append(done - ran)
        b.runc("delete", "-f", cid)
        return done - began

    return once


def _podman_variant(p: Podman, name: str, extra: tuple[str, ...]) -> Variant:
    def once(i: int) -> float:
        began = time.perf_counter()
        p.run(f"{name}{i + 1}", *extra)
        took = time.perf_counter() - began
        p("rm", "-f", "-t", "0", f"{name}{i + 1}")
        return took

    return once


def _hook_phases(log: Path) -> dict[str, list[float]]:
    """stage -> part -> samples (s), from the hook's `... took N ms in-process: part N ms, ...` lines."""
    out: dict[str, list[float]] = {}
    for line in log.read_text().splitlines():
        m = _TIME_LINE.search(line)
        if m is None:
            continue
        stage = m.group(2)
        out.setdefault(f"{stage}, in-process", []).append(int(m.group(3)) / 1e3)
        for part in m.group(4).split(", "):
            what, ms, _unit = part.rsplit(" ", 2)
            out.setdefault(f"{stage}: {what}", []).append(int(ms) / 1e3)
    return out


def _machine() -> str:
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    runc = subprocess.run([str(oci_bed.RUNC), "--version"], capture_output=True, text=True).stdout.split()
    podman = subprocess.run([PODMAN, "--version"], capture_output=True, text=True).stdout if PODMAN else ""
    return (
        f"machine: {platform.node()} {platform.machine()}, {os.cpu_count()} cores, load {load}, "
        f"kernel {platform.release()}, Python {platform.python_version()}, runc {runc[2]}, "
        f"podman {podman.split()[-1] if podman else 'none'}"
    )


def _verdict(ok: bool) -> str:
    return "meets" if ok else "MISSES"


def main(argv: Sequence[str] | None = None) -> None:
    """`argv` None (as `tests.bench` calls it): the defaults, never this process's command line."""
    p = argparse.ArgumentParser(prog="bench_oci")
    p.add_argument("--blocks", type=int, default=4, help="alternating blocks per comparison")
    p.add_argument("--per-block", type=int, default=5, help="runs of each variant per block")
    args = p.parse_args([] if argv is None else argv)
    why = oci_bed.missing()
    if why:
        print(f"oci bench skipped: {why}")
        return
    t0 = time.perf_counter()
    print(_machine())
    print("oci hooks bench (real host service on the sim backend, medians, alternating blocks)")
    phases: dict[str, list[float]] = {}
    with oci_bed.bed() as b:
        runc = _blocks(
            args.blocks,
            args.per_block,
            {
                "plain": _runc_variant(b, "plain", None, False, phases),
                "hooked": _runc_variant(b, "hooked", None, True, phases),
                "vf": _runc_variant(b, "vf", "1", False, phases),  # prepare adds the hooks
            },
        )
        base, hooked, vf = (_median_ms(runc[k]) for k in ("plain", "hooked", "vf"))
        n = len(runc["plain"])
        print(f"  runc run -d, no hooks              {base:7.1f} ms  ({n} runs each)")
        print(
            f"  runc, hooks (sh front), no annot.  {hooked:7.1f} ms  ratio {hooked / base:.3f}"
            f"   target <= 1.05: {_verdict(hooked / base <= 1.05)}"
        )
        print(
            f"  runc, 1 VF: prepare + run -d       {vf:7.1f} ms  bare + {vf - base:.0f} ms"
            f"   target <= bare + 150 ms: {_verdict(vf - base <= 150)}"
        )
        _podman(b, args)
        print("  where a 1-VF runc start goes (medians; in-process parts from the hook's log):")
        rows = {**phases, **_hook_phases(b.guest.hook_log)}
        for name in sorted(rows):
            if name.startswith(("plain", "hooked")):
                continue
            print(f"    {name:52} {_median_ms(rows[name]):7.1f} ms")
        print(
            f"    {'runc run -d without hooks, wall':52} {_median_ms(phases['plain: runc run -d, wall']):7.1f} ms"
        )
        assert b.host.leases() == [], "the 1-VF containers left leases behind"
    print(f"  total {time.perf_counter() - t0:.1f} s")


def _podman(b: oci_bed.Bed, args: argparse.Namespace) -> None:
    if why := podman_missing():
        print(f"  podman skipped: {why}")
        return
    per_block = max(args.per_block // 2, 2)
    with podman_bed(b, hooks=False, name="podman-plain") as bare, podman_bed(b, name="podman") as ours:
        pod = _blocks(
            args.blocks,
            per_block,
            {
                "plain": _podman_variant(bare, "plain", ()),
                "hooked": _podman_variant(ours, "hooked", ()),
                "vf": _podman_variant(ours, "vf", ("--annotation", "vfhotplug.io/vfs=1")),
            },
        )
    base, hooked, vf = (_median_ms(pod[k]) for k in ("plain", "hooked", "vf"))
    print(f"  podman run -d, empty hooks dir     {base:7.1f} ms  ({len(pod['plain'])} runs each)")
    print(f"  podman, our hooks.d, no annot.     {hooked:7.1f} ms  ratio {hooked / base:.3f} (filtered out)")
    print(
        f"  podman, 1 VF                       {vf:7.1f} ms  bare + {vf - base:.0f} ms"
        f"   target <= bare + 200 ms: {_verdict(vf - base <= 200)}"
    )


if __name__ == "__main__":
    main(sys.argv[1:])
