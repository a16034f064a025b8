"""`make bench`: every benchmark of the project, one section each, with the machine named first.

Figures are medians/ratios on this machine; nothing here passes or fails on speed.
"""

from __future__ import annotations

import importlib
import os
import platform
import sys
import time

SECTIONS = (
    ("NRI core and pod lifecycle through CRI (issues: NRI core, pod lifecycle)", "tests.bench_pods"),
    ("Pod lifecycle core alone, FakeHost (no gRPC)", "tests.bench_pod"),
    ("Host service: Attach+Release through gRPC+mTLS, 64 vs 4096 VFs", "tests.bench_host"),
    ("Host service: libvirt phases with real libvirtd (emulated NIC)", "tests.bench_libvirt"),
    ("User-space data path: VPP programming, DPDK health poll, memif rate", "tests.bench_datapath"),
    ("OCI hooks: container start through runc and podman, with and without hooks", "tests.bench_oci"),
    ("The lab's VM side: per-phase latency of pod start and release in a TCG guest", "tests.bench_lab"),
    ("The lab's SR-IOV level: set-up and one nested run on real igbvf VFs (~4 min)", "tests.bench_lab_d"),
)


def main() -> int:
    only = set(sys.argv[1:])
    print(
        f"machine: {platform.node()} {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"
    )
    failed = []
    for title, module in SECTIONS:
        if only and module.rsplit(".", 1)[-1] not in only:
            continue
        print(f"\n== {title} ({module})", flush=True)
        started = time.monotonic()
        try:
            importlib.import_module(module).main()
        except Exception as e:  # noqa: BLE001 - one broken section must not hide the others' figures
            print(f"!! {module} failed: {type(e).__name__}: {e}")
            failed.append(module)
        print(f"   ({time.monotonic() - started:.0f} s)", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
