"""Debian's podman 4.3 over the OCI hooks bed: its own storage under the bed's folder, the test bed's runc
(podman's default crun refuses this machine's hybrid cgroups), the shipped hooks.d JSON pointed at the bed's
hook, and a busybox image loaded from the archive the containerd test bed builds (no registry)."""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from tests.oci import bed as oci_bed

PODMAN = shutil.which("podman")
IMAGE_ARCHIVE = oci_bed.REPO / "build/containerd/images/busybox.tar"
IMAGE = "localhost/test/busybox:1.0"
SHIPPED_HOOK = oci_bed.REPO / "config/hooks.d/vfhotplug.json"


def missing() -> str | None:
    if why := oci_bed.missing():
        return why
    if PODMAN is None or not IMAGE_ARCHIVE.exists():
        return "podman or the busybox image archive missing: run testbed/oci/setup.sh (make testbed-oci)"
    return None


@dataclass
class Podman:
    bed: oci_bed.Bed
    folder: Path
    calls: Path  # one line per hook run: the oracle for "never runs the hook"

    def __call__(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        cmd = [
            "nsenter",
            f"--net={self.bed.guest.netns_path}",
            str(PODMAN),
            "--root",
            str(self.folder / "root"),
            "--runroot",
            str(self.folder / "run"),
            "--tmpdir",
            str(self.folder / "tmp"),
            "--runtime",
            str(oci_bed.RUNC),
            "--cgroup-manager",
            "cgroupfs",
            "--events-backend",
            "file",
            "--hooks-dir",
            str(self.folder / "hooks.d"),
            *args,
        ]
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
        if check and res.returncode != 0:
            raise AssertionError(f"podman {' '.join(args)} failed ({res.returncode}): {res.stderr}")
        return res

    def run(self, name: str, *extra: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return self(
            "run",
            "-d",
            "--name",
            name,
            "--network",
            "none",
            # The sandbox's limits: podman's defaults exceed them (notes: oci-hooks.md).
            "--ulimit",
            "nofile=20000:20000",
            "--ulimit",
            "nproc=32768:32768",
            *extra,
            "--entrypoint",
            "/bin/sleep",
            IMAGE,
            "600",
            check=check,
        )

    def hook_runs(self) -> int:
        return len(self.calls.read_text().splitlines()) if self.calls.exists() else 0


@contextmanager
def podman_bed(b: oci_bed.Bed, hooks: bool = True, name: str = "podman") -> Iterator[Podman]:
    """podman over bed `b`, its files in `name`; without `hooks`, an empty hooks dir (a baseline)."""
    folder = b.folder / name
    (folder / "hooks.d").mkdir(parents=True)
    calls = folder / "hook-calls"
    if hooks:
        # The hook as installed (the sh front), plus one line per run for the test to count.
        counting = folder / "vfhotplug-oci-hook"
        counting.write_text(f'#!/bin/sh\necho "$*" >> {calls}\nexec {b.front} "$@"\n')
        counting.chmod(0o755)
        spec = json.loads(SHIPPED_HOOK.read_text())
        args = spec["hook"]["args"]
        spec["hook"]["path"] = str(counting)
        spec["hook"]["args"] = [args[0], *b.hook_args(), *args[1:]]
        (folder / "hooks.d/vfhotplug.json").write_text(json.dumps(spec))
    p = Podman(b, folder, calls)
    p("load", "-q", "-i", str(IMAGE_ARCHIVE))
    try:
        yield p
    finally:
        p("rm", "-a", "-f", "-t", "0", check=False)
