"""The check of real SR-IOV VFs, run inside the outer guest (L1) that plays the physical host (started by
l1-init.sh).

Drives the project's own adapters and host service against real igbvf VFs of an emulated igb PF, this
machine's libvirtd 9.0 and an inner TCG guest (L2) whose init reports PCI add/remove on its serial console.
It records what it observes (settings read back through netlink and through `ip -j -d link show`, guest
PCI events, live aliases, VF drivers, libvirt error codes, timings) in a JSON file; tests/lab/test_sriov.py
asserts on it on this machine. A failing step is recorded with its traceback and the next step still runs.
The steps: adapter_checks (inventory, netlink, hot-plug), service_checks (the service over gRPC),
error_checks (libvirt's codes).

Usage (in L1): python -m lab.sriov.check --pf PF --result FILE --work DIR
"""

from __future__ import annotations

import argparse
import logging
import shutil
from collections.abc import Callable
from pathlib import Path

from lab.sriov.adapter_checks import AdapterChecks
from lab.sriov.error_checks import error_codes
from lab.sriov.l1 import L1
from lab.sriov.record import Recorder
from lab.sriov.service_checks import ServiceChecks

# The steps that need the inner guest; the others run whatever failed before them.
NEEDS_GUEST = frozenset(
    {"interface_hostdev", "hostdev", "interface_hostdev_release", "service", "error_codes"}
)


def finish(l1: L1, services: ServiceChecks) -> None:
    """The VFs as the run leaves them, the inner guest's console tail, the service's log; tears down."""
    l1.rec.put("final.vfs", [{"pci": str(v.pci), "driver": l1.sysfs.driver(v.pci)} for v in l1.vfs])
    l1.rec.put("final.views", [l1.pf_view(v) for v in l1.vfs])
    l1.rec.put("l2.console_tail", l1.vm.console().splitlines()[-40:])
    services.host.stop()  # already stopped unless the service step was skipped or failed early
    if services.host.log_path.exists():
        shutil.copy(services.host.log_path, l1.work / "host.log")
    l1.close()


def run(pf: str, result: Path, work: Path) -> None:
    rec = Recorder(result)
    l1 = L1(pf, rec, work)
    adapters, services = AdapterChecks(l1), ServiceChecks(l1)
    steps: list[tuple[str, Callable[[], None]]] = [
        ("discover", adapters.discover),
        ("netlink", adapters.netlink),
        ("start_service", services.start_service),
        ("boot_l2", adapters.boot_l2),
        # hostdev goes in while the interface-hostdev VF is still plugged, so each attach gets a root port
        # of its own: re-plugging a port the nested guest has just emptied sometimes never shows up in it.
        ("interface_hostdev", adapters.interface_hostdev),
        ("hostdev", adapters.hostdev),
        ("interface_hostdev_release", adapters.interface_hostdev_release),
        ("service", services.service),
        ("error_codes", lambda: error_codes(l1)),
        ("finish", lambda: finish(l1, services)),
    ]
    for name, fn in steps:
        if name in NEEDS_GUEST and not rec.ok("boot_l2"):
            continue
        with rec.step(name):
            fn()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--pf", required=True, help="the igb PF's netdev")
    parser.add_argument("--result", type=Path, required=True, help="JSON file to write")
    parser.add_argument("--work", type=Path, required=True, help="scratch directory (L2 console log)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    args.work.mkdir(parents=True, exist_ok=True)
    run(args.pf, args.result, args.work)


if __name__ == "__main__":
    main()
