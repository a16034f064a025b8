"""The same hooks under crun 1.8 (installed with podman). crun refuses this machine's hybrid cgroup layout,
so each call runs in a private mount namespace with the cgroup2 mount at /sys/fs/cgroup/unified hidden
(changes nothing outside; notes: oci-hooks.md). crun reports `created` at createRuntime, and shows a
hook's stderr only in the file its `run.oci.hooks.stderr` annotation names."""

from __future__ import annotations

import shlex
import shutil
import subprocess
from collections.abc import Iterator

import pytest

from tests.oci import bed as oci_bed

CRUN = shutil.which("crun")
pytestmark = pytest.mark.skipif(
    bool(oci_bed.missing()) or CRUN is None,
    reason=str(oci_bed.missing() or "crun missing: run testbed/oci/setup.sh (it comes with podman)"),
)


@pytest.fixture
def bed() -> Iterator[oci_bed.Bed]:
    with oci_bed.bed() as b:
        yield b
        for cid in crun(b, "list", "-q").stdout.split():  # left by a failed test
            crun(b, "delete", "-f", cid)


def crun(b: oci_bed.Bed, *args: str) -> subprocess.CompletedProcess[str]:
    out, err = b.folder / "crun.out", b.folder / "crun.err"
    inner = shlex.join([str(CRUN), "--root", str(b.folder / "crun"), *args])
    script = (
        f"umount /sys/fs/cgroup/unified 2>/dev/null; "
        f"exec nsenter --net={b.guest.netns_path} {inner} </dev/null >{out} 2>{err}"
    )
    code = subprocess.run(
        ["unshare", "-m", "--propagation", "private", "sh", "-c", script], timeout=60
    ).returncode
    return subprocess.CompletedProcess(args, code, out.read_text(), err.read_text())


def test_kernel_mode_under_crun(bed):
    bundle = bed.bundle("c1", "1")
    bed.hook_cmd("prepare", "--id", "c1", "--hook-path", str(bed.hook), str(bundle))
    res = crun(bed, "run", "-d", "--bundle", str(bundle), "c1")
    assert res.returncode == 0, res.stderr
    (lease,) = bed.host.leases_of("c1")
    links = oci_bed.parse_ip_link(crun(bed, "exec", "c1", "ip", "-o", "link").stdout)
    assert links["net1"] == lease.mac
    assert crun(bed, "delete", "-f", "c1").returncode == 0
    assert bed.host.leases_of("c1") == [] and bed.guest.records() == []


def test_bad_annotation_under_crun_reaches_its_stderr_file(bed):
    bundle = bed.bundle("c2", '[{"vlan": 5000}]')
    stderr_file = bed.folder / "hook-stderr"
    bed.add_hooks(bundle, **{"run.oci.hooks.stderr": str(stderr_file)})
    res = crun(bed, "run", "-d", "--bundle", str(bundle), "c2")
    assert res.returncode != 0 and "exit code: 1" in res.stderr
    line = "vfhotplug: container c2: bad demand: vfhotplug.io/vfs request 0 field 'vlan': 5000 is above 4094"
    assert line in stderr_file.read_text()
    assert bed.host.leases() == [] and bed.guest.records() == []
