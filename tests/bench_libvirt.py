"""Per-phase latency of emulated-nic hot-plug against the tier C testbed (root, `make testbed-libvirt`).

Boots one guest, runs N attach+detach cycles through LibvirtHotplug and prints the median of each phase
(libvirt_call, event_wait) and of the whole call, plus the time until the guest's init reports the device.
Usage: python -m tests.bench_libvirt [N]
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
import uuid
from collections import defaultdict
from pathlib import Path

from contract.pci import PciAddress
from host_side.backends.base import VfRef, VfSettings, lease_alias
from host_side.backends.libvirt_hotplug import LibvirtHotplug
from testbed.libvirt_vm import URI, TestVm

_VF = VfRef("bench-pf", PciAddress.parse("0000:3b:00.0"), 0, PciAddress.parse("0000:3b:10.0"))


def _ms(values: list[float]) -> str:
    return f"{statistics.median(values) * 1000:9.2f}"


def run(cycles: int) -> dict[str, list[float]]:
    samples: dict[str, list[float]] = defaultdict(list)
    op = ""

    def observe(phase: str, seconds: float) -> None:
        samples[f"{op} {phase}"].append(seconds)

    with tempfile.TemporaryDirectory(prefix="vfhp-bench-") as run_dir:
        vm = TestVm(f"vfhp-bench-{uuid.uuid4().hex[:8]}", run_dir=Path(run_dir))
        samples["boot"].append(vm.start())
        hp = LibvirtHotplug(URI, mode="emulated-nic", observe=observe)
        try:
            for n in range(cycles):
                alias, mac = lease_alias(f"bench-{n}"), f"52:54:00:be:00:{n % 256:02x}"
                op = "attach"
                t0 = time.monotonic()
                dev = hp.attach(vm.name, _VF, alias, VfSettings(mac=mac), 30.0)
                samples["attach total"].append(time.monotonic() - t0)
                bdf = str(dev.guest_pci)
                vm.wait_for_device(bdf, mac, 30.0)
                samples["attach until guest sees it"].append(time.monotonic() - t0)
                op = "detach"
                t0 = time.monotonic()
                hp.detach(vm.name, alias, 30.0)
                samples["detach total"].append(time.monotonic() - t0)
                vm.wait_for_removal(bdf, 30.0)
                samples["detach until guest lost it"].append(time.monotonic() - t0)
        finally:
            hp.close()
            vm.destroy()
    return samples


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    cycles = int(args[0]) if args else 10
    samples = run(cycles)
    print(f"libvirt emulated-nic hot-plug, {cycles} cycles, medians in ms (tier C, TCG)")
    for name in sorted(samples):
        print(f"  {name:<28}{_ms(samples[name])}   (n={len(samples[name])})")


if __name__ == "__main__":
    main()
