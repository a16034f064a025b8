"""The SR-IOV lab's launcher, run on this machine: one outer guest (L1) under trixie's QEMU 10, TCG.

L1 gets an emulated `igb` SR-IOV PF behind a pcie-root-port with an emulated VT-d, a spare non-SR-IOV NIC
(the target of the "not a VF" error case), this machine's root over read-only 9p, and a read-write 9p
share for its results. Its init (l1-init.sh) runs `lab.sriov.check` and powers off; this module waits
for that and returns what the check wrote. Built by lab/sriov/setup.sh (shared notes "libvirt-qemu-lab" §6).

Usage: python -m lab.sriov.run [--out DIR] [--timeout S]
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parents[2]
BUILD = REPO / "build" / "lab-d"
# Where the chroot sees this machine's root and the results directory (made by setup.sh).
_L1ROOT = "/l1root"
_LABOUT = "/labout"
# L1's kernel now and then stalled early under TCG on a busy machine (RCU stall, no timer ticks, seen 1 of
# 5 boots); its init normally starts ~7 s after QEMU. Boot again instead of waiting out the whole run.
_INIT_DEADLINE_S = 90.0
_BOOT_ATTEMPTS = 2


class LabError(Exception):
    """The nested run could not be started or did not finish; the message says what to look at."""


@dataclass(frozen=True)
class L0Plan:
    """What the outer QEMU boots; paths are as this machine sees them."""

    vmlinux: Path
    initramfs: Path
    l1_init: Path
    memory_mib: int = 3072
    cpus: int = 2


def _inside(path: Path) -> str:
    """`path` of this machine as the chroot sees it through the root bind mount. Resolved first: an
    absolute symlink on the way (a build folder linked from elsewhere) would point outside the mount."""
    return f"{_L1ROOT}{path.resolve()}"


def qemu_command(plan: L0Plan) -> list[str]:
    """The outer QEMU's argv, to run inside the trixie chroot."""
    cmdline = f"console=ttyS0 panic=-1 no_timer_check intel_iommu=on labd.init={plan.l1_init}"
    return [
        "qemu-system-x86_64",
        "-accel", "tcg,thread=multi",
        "-M", "q35",
        "-cpu", "max",
        "-smp", str(plan.cpus),
        "-m", str(plan.memory_mib),
        "-display", "none",
        "-no-reboot",
        "-serial", f"file:{_LABOUT}/l1.console.log",
        "-device", "intel-iommu,intremap=on",
        # The SR-IOV PF. User networking with restrict=on: nothing leaves this machine.
        "-device", "pcie-root-port,id=rp1,chassis=1",
        "-netdev", "user,id=n0,restrict=on",
        "-device", "igb,netdev=n0,bus=rp1",
        # A NIC that is not a VF, for libvirt's "interface hostdev needs a VF" error; no backend needed.
        "-device", "pcie-root-port,id=rp2,chassis=2",
        "-device", "e1000e,bus=rp2",
        "-fsdev", f"local,id=fs0,path={_L1ROOT},security_model=none,readonly=on",
        "-device", "virtio-9p-pci,fsdev=fs0,mount_tag=l1root",
        "-fsdev", f"local,id=fs1,path={_LABOUT},security_model=none",
        "-device", "virtio-9p-pci,fsdev=fs1,mount_tag=labout",
        "-kernel", _inside(plan.vmlinux),
        "-initrd", _inside(plan.initramfs),
        "-append", cmdline,
    ]  # fmt: skip


def _run(argv: list[str]) -> None:
    proc = subprocess.run(argv, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise LabError(f"{' '.join(argv)} failed ({proc.returncode}): {proc.stderr.strip()}")


class Chroot:
    """The trixie chroot with this machine's root bind-mounted (non-recursively, read-only) and `out` as
    the results directory; a context manager that undoes its mounts."""

    def __init__(self, root: Path, out: Path) -> None:
        self.root = root
        self._out = out
        self._mounted: list[Path] = []

    def _mount(self, argv: list[str], target: Path) -> None:
        _run([*argv, str(target)])
        self._mounted.append(target)

    def _drop_stale(self) -> None:
        """Unmounts what a killed earlier run left at our targets (deepest first)."""
        mounted = [Path(line.split()[4]) for line in Path("/proc/self/mountinfo").read_text().splitlines()]
        for target in sorted((m for m in mounted if m.is_relative_to(self.root)), reverse=True):
            log.warning("unmounting %s left by an earlier run", target)
            _run(["umount", "-l", str(target)])

    def __enter__(self) -> Chroot:
        if not (self.root / "usr/bin/qemu-system-x86_64").exists():
            raise LabError(f"{self.root} has no QEMU 10; run lab/sriov/setup.sh first")
        self._drop_stale()
        try:
            self._mount(["mount", "-t", "proc", "proc"], self.root / "proc")
            # Non-recursive: L1 gets / without this machine's /proc, /sys, /dev or other mounts.
            l1root = self.root / _L1ROOT.lstrip("/")
            self._mount(["mount", "--bind", "/"], l1root)
            _run(["mount", "-o", "remount,bind,ro", str(l1root)])
            self._mount(["mount", "--bind", str(self._out)], self.root / _LABOUT.lstrip("/"))
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *_exc: object) -> None:
        while self._mounted:
            target = self._mounted.pop()
            proc = subprocess.run(["umount", str(target)], capture_output=True, text=True, check=False)
            if proc.returncode != 0:
                log.warning("umount %s failed: %s", target, proc.stderr.strip())


@dataclass(frozen=True)
class RunOutcome:
    """One finished nested run: the check's JSON (None when it wrote none), wall time, where logs are."""

    result: dict[str, Any] | None
    wall_s: float
    out: Path


def _boot_once(argv: list[str], out: Path, deadline: float) -> int | None:
    """One boot of L1 until it powers off; its exit code, or None when its init never started."""
    log.info("starting L1: %s", " ".join(argv))
    started = time.monotonic()
    with (out / "l0-qemu.log").open("w") as qlog:
        proc = subprocess.Popen(argv, stdout=qlog, stderr=subprocess.STDOUT)
        try:
            while (code := proc.poll()) is None:
                now = time.monotonic()
                if now > deadline:
                    raise LabError(f"L1 did not power off in time; see {out}/l1.log and l1.console.log")
                if now - started > _INIT_DEADLINE_S and not (out / "l1.log").exists():
                    return None
                time.sleep(0.5)
            return code
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


def run_nested(out: Path, timeout_s: float = 1500.0) -> RunOutcome:
    """Boots L1 (again if it stalls before its init), waits for it to power off, returns what
    lab.sriov.check wrote to `out`."""
    plan = L0Plan(
        vmlinux=BUILD / "vmlinux",
        initramfs=BUILD / "l1-initramfs.cpio.gz",
        l1_init=REPO / "lab" / "sriov" / "l1-init.sh",
    )
    for needed in (plan.vmlinux, plan.initramfs):
        if not needed.exists():
            raise LabError(f"{needed} is missing; run lab/sriov/setup.sh first")
    out = out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    for stale in ("result.json", "l1.log", "l1.console.log", "labd-l2.log"):
        (out / stale).unlink(missing_ok=True)
    shutil.rmtree(out / "l2", ignore_errors=True)
    t0 = time.monotonic()
    with Chroot(BUILD / "trixie", out) as chroot:
        argv = ["chroot", str(chroot.root), *qemu_command(plan)]
        for attempt in range(1, _BOOT_ATTEMPTS + 1):
            code = _boot_once(argv, out, t0 + timeout_s)
            if code is not None:
                break
            log.warning(
                "L1 attempt %d: its init did not start within %.0f s; booting again",
                attempt,
                _INIT_DEADLINE_S,
            )
        else:
            raise LabError(f"L1 never reached its init in {_BOOT_ATTEMPTS} boots; see {out}/l1.console.log")
    wall = time.monotonic() - t0
    if code != 0:
        raise LabError(f"outer QEMU exited with {code}; see {out}/l0-qemu.log")
    result_file = out / "result.json"
    result = json.loads(result_file.read_text()) if result_file.exists() else None
    return RunOutcome(result=result, wall_s=wall, out=out)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, default=BUILD / "run", help="results directory")
    parser.add_argument("--timeout", type=float, default=1500.0, help="seconds before L1 is killed")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    try:
        outcome = run_nested(args.out, args.timeout)
    except LabError as e:
        sys.exit(f"sriov lab: {e}")
    print(f"sriov lab: L1 ran {outcome.wall_s:.1f} s; results in {outcome.out}")
    if outcome.result is None:
        sys.exit(f"sriov lab: the check wrote no result.json; see {outcome.out}/l1.log")
    steps = outcome.result.get("steps", {})
    failed = [name for name, step in steps.items() if not step.get("ok")]
    print(f"sriov lab: {len(steps)} steps in {outcome.result.get('total_s')} s, failed: {failed or 'none'}")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
