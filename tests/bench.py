"""`make bench`: every benchmark of the project, one section each, with the machine named first.

Figures are medians/ratios on this machine; nothing here passes or fails on speed.
"""

from __future__ import annotations

import argparse
import importlib
import os
import platform
import sys
import time

from testbed.containerd import RUNTIMES, Runtime

SECTIONS = (
    (
        "containerd test bed alone: start/stop, RunPodSandbox host network vs own netns",
        "tests.bench_containerd",
    ),
    (
        "NRI path: pod start through CRI, no plugin vs plugin vs 1 VF, in alternating blocks",
        "tests.bench_pods",
    ),
    ("Pod lifecycle core alone, FakeHost (no gRPC)", "tests.bench_pod"),
    ("Host service: Attach+Release through gRPC+mTLS, 64 vs 4096 VFs", "tests.bench_host"),
    ("Host service: libvirt phases with real libvirtd (emulated NIC)", "tests.bench_libvirt"),
    ("User-space data path: VPP programming, DPDK health poll, memif rate", "tests.bench_datapath"),
    ("OCI hooks: container start through runc and podman, with and without hooks", "tests.bench_oci"),
    ("The lab's VM side: per-phase latency of pod start and release in a TCG guest", "tests.bench_lab"),
    ("The lab's SR-IOV level: set-up and one nested run on real igbvf VFs (~4 min)", "tests.bench_lab_d"),
)


def machine() -> str:
    """One line naming the machine the figures come from."""
    model = next(
        (line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")),
        "?",
    )
    ram = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") >> 30
    return (
        f"machine: {platform.node()} {platform.machine()}, {os.cpu_count()} cores ({model}), {ram} GiB, "
        f"Linux {platform.release()}, Python {platform.python_version()}, load {os.getloadavg()[0]:.2f}"
    )


def add_runtime_option(p: argparse.ArgumentParser) -> None:
    """`--runtime NAME` (repeatable) of a bench over the containerd releases."""
    names = [r.name for r in RUNTIMES]
    p.add_argument(
        "--runtime", choices=names, action="append", help=f"runtimes to bench (default: all of {names})"
    )


def chosen_runtimes(args: argparse.Namespace) -> list[Runtime]:
    return [r for r in RUNTIMES if not args.runtime or r.name in args.runtime]


def main() -> int:
    only = set(sys.argv[1:])
    unknown = only - {module.rsplit(".", 1)[-1] for _, module in SECTIONS}
    if unknown:
        names = ", ".join(module.rsplit(".", 1)[-1] for _, module in SECTIONS)
        print(f"unknown section {', '.join(sorted(unknown))}; sections: {names}", file=sys.stderr)
        return 2
    print(machine())
    failed = []
    for title, module in SECTIONS:
        if only and module.rsplit(".", 1)[-1] not in only:
            continue
        print(f"\n== {title} ({module})", flush=True)
        started = time.monotonic()
        # Each section runs with its own defaults: its parser must not see this program's arguments.
        saved, sys.argv = sys.argv, [module]
        try:
            importlib.import_module(module).main()
        except Exception as e:  # noqa: BLE001 - one broken section must not hide the others' figures
            print(f"!! {module} failed: {type(e).__name__}: {e}")
            failed.append(module)
        finally:
            sys.argv = saved
        print(f"   ({time.monotonic() - started:.0f} s)", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
