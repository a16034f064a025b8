"""OCI hooks figures (root): container start-to-running through the real runc (`runc run -d` returns once
the container runs), with and without our hooks in config.json, against the real host service (sim
backend). `make bench` calls main().

- plain: no hooks, no annotation (the baseline)
- hooks, no annotation: the documented createRuntime/poststop hooks on a container asking for no VFs
  (their fast path); `vfhotplug-hook prepare` only adds hooks to bundles that ask for VFs, so such
  containers normally pay nothing
- 1 VF: `vfhotplug-hook prepare` (host attach, wait, files, config.json) plus `runc run -d` (createRuntime
  moves the VF into the container's netns)
- podman (when installed): `podman run -d` of a container without the annotation with an empty hooks dir
  and with our hooks.d JSON (whose annotation filter keeps the hook from running), and with 1 VF
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence

from tests.oci import bed as oci_bed
from tests.oci.podman import Podman, podman_bed
from tests.oci.podman import missing as podman_missing


def _median_ms(samples: list[float]) -> float:
    return statistics.median(samples) * 1e3


def _interleaved(n: int, variants: Mapping[str, Callable[[int], float]]) -> dict[str, list[float]]:
    """n rounds, each running every variant once, so load changes on the machine hit all of them alike."""
    for once in variants.values():
        once(-1)  # warm-up: page cache, pyc files
    out: dict[str, list[float]] = {name: [] for name in variants}
    for i in range(n):
        for name, once in variants.items():
            out[name].append(once(i))
    return out


def _runc_variant(b: oci_bed.Bed, name: str, annotation: str | None, hooks: bool) -> Callable[[int], float]:
    """Start-to-running of one container; with an annotation, `prepare` counts too (it is part of it)."""

    def once(i: int) -> float:
        cid = f"{name}{i + 1}"
        bundle = b.bundle(cid, annotation)
        if hooks:
            b.add_hooks(bundle)
        began = time.perf_counter()
        if annotation is not None:
            b.hook_cmd("prepare", "--id", cid, "--hook-path", str(b.hook), str(bundle))
        b.runc("run", "-d", "--bundle", str(bundle), cid)
        took = time.perf_counter() - began
        b.runc("delete", "-f", cid)
        return took

    return once


def _podman_variant(p: Podman, name: str, extra: tuple[str, ...]) -> Callable[[int], float]:
    def once(i: int) -> float:
        began = time.perf_counter()
        p.run(f"{name}{i + 1}", *extra)
        took = time.perf_counter() - began
        p("rm", "-f", "-t", "0", f"{name}{i + 1}")
        return took

    return once


def main(argv: Sequence[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="bench_oci")
    p.add_argument("--rounds", type=int, default=15)
    args = p.parse_args(argv)
    why = oci_bed.missing()
    if why:
        print(f"oci bench skipped: {why}")
        return
    t0 = time.perf_counter()
    version = subprocess.run([str(oci_bed.RUNC), "--version"], capture_output=True, text=True).stdout.split()[
        2
    ]
    print(f"oci hooks bench (runc {version}, real host service on the sim backend, medians)")
    with oci_bed.bed() as b:
        runc = _interleaved(
            args.rounds,
            {
                "plain": _runc_variant(b, "plain", None, hooks=False),
                "hooked": _runc_variant(b, "hooked", None, hooks=True),
            },
        )
        vf = _interleaved(max(args.rounds // 3, 3), {"vf": _runc_variant(b, "vf", "1", hooks=True)})
        base = _median_ms(runc["plain"])
        print(f"  runc run -d, no hooks             {base:7.1f} ms  ({args.rounds} runs)")
        hooked = _median_ms(runc["hooked"])
        print(f"  runc, hooks, no annotation        {hooked:7.1f} ms  ratio {hooked / base:.2f}")
        print(f"  runc, 1 VF: prepare + run -d      {_median_ms(vf['vf']):7.1f} ms  ({len(vf['vf'])} runs)")
        if why := podman_missing():
            print(f"  podman skipped: {why}")
        else:
            rounds = max(args.rounds // 2, 3)
            with (
                podman_bed(b, hooks=False, name="podman-plain") as bare,
                podman_bed(b, name="podman") as ours,
            ):
                pod = _interleaved(
                    rounds,
                    {
                        "plain": _podman_variant(bare, "plain", ()),
                        "hooked": _podman_variant(ours, "hooked", ()),
                    },
                )
                pod |= _interleaved(
                    max(rounds // 2, 3),
                    {"vf": _podman_variant(ours, "vf", ("--annotation", "vfhotplug.io/vfs=1"))},
                )
            pbase, phooked = _median_ms(pod["plain"]), _median_ms(pod["hooked"])
            print(f"  podman run -d, empty hooks dir    {pbase:7.1f} ms  ({rounds} runs)")
            print(
                f"  podman, our hooks.d, no annot.    {phooked:7.1f} ms  ratio {phooked / pbase:.2f} (filtered out)"
            )
            print(
                f"  podman, 1 VF                      {_median_ms(pod['vf']):7.1f} ms  ({len(pod['vf'])} runs)"
            )
        assert b.host.leases() == [], "the 1-VF containers left leases behind"
    print(f"  total {time.perf_counter() - t0:.1f} s")


if __name__ == "__main__":
    main()
