"""The shipped hooks.d JSON through Debian's real podman 4.3 (with the test bed's runc; podman's default
crun refuses this machine's hybrid cgroups): precreate adds the devices, env and mounts, createRuntime moves
the VFs in, podman's own poststop gives them back; a container without the annotation never runs the hook."""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.oci import bed as oci_bed

PODMAN = shutil.which("podman")
IMAGE_ARCHIVE = oci_bed.REPO / "build/containerd/images/busybox.tar"
IMAGE = "localhost/test/busybox:1.0"
SHIPPED_HOOK = oci_bed.REPO / "config/hooks.d/vfhotplug.json"

pytestmark = pytest.mark.skipif(
    bool(oci_bed.missing()) or PODMAN is None or not IMAGE_ARCHIVE.exists(),
    reason=str(oci_bed.missing() or "podman or the busybox image archive missing: run testbed/oci/setup.sh"),
)


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


@pytest.fixture
def podman() -> Iterator[Podman]:
    with oci_bed.bed() as b:
        folder = b.folder / "podman"
        (folder / "hooks.d").mkdir(parents=True)
        calls = folder / "hook-calls"
        # The hook as installed, plus one line per run for the test to count.
        counting = folder / "vfhotplug-hook"
        counting.write_text(f'#!/bin/sh\necho "$*" >> {calls}\nexec {b.hook} "$@"\n')
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


def test_annotated_container_gets_vfs_plain_one_never_runs_the_hook(podman):
    bed = podman.bed
    podman.run("plain")
    assert podman.hook_runs() == 0
    podman("rm", "-f", "-t", "0", "plain")
    assert podman.hook_runs() == 0

    cid = podman.run("vf", "--annotation", "vfhotplug.io/vfs=2").stdout.strip()
    leases = bed.host.leases_of(cid)
    links = oci_bed.parse_ip_link(podman("exec", "vf", "ip", "-o", "link").stdout)
    assert len(leases) == 2 and {links["net1"], links["net2"]} == {le.mac for le in leases}
    env = podman("exec", "vf", "cat", "/proc/1/environ").stdout
    assert "VFHOTPLUG_COUNT=2" in env
    assert bed.guest.records() == [cid]
    assert podman.hook_runs() == 2  # precreate and createRuntime

    podman("rm", "-f", "-t", "0", "vf")
    assert podman.hook_runs() == 3  # podman's poststop
    assert bed.host.leases_of(cid) == []
    assert bed.guest.records() == [] and bed.guest.journal() == []


def test_bad_annotation_fails_podman_run_without_a_lease(podman):
    bed = podman.bed
    res = podman.run("bad", "--annotation", "vfhotplug.io/vfs=99", check=False)
    assert res.returncode != 0
    line = "vfhotplug: container {}: bad demand: vfhotplug.io/vfs request 0 field 'count': 99 is not in 1..4"
    cid = podman("inspect", "--format", "{{.Id}}", "bad").stdout.strip()
    assert line.format(cid) in res.stderr  # through runc's createRuntime error, the one podman shows
    assert podman("inspect", "--format", "{{.State.Status}}", "bad").stdout.strip() != "running"
    assert bed.host.leases() == [] and bed.guest.records() == []
