"""The shipped hooks.d JSON through Debian's real podman 4.3 (with the test bed's runc; podman's default
crun refuses this machine's hybrid cgroups): precreate adds the devices, env and mounts, createRuntime moves
the VFs in, podman's own poststop gives them back; a container without the annotation never runs the hook."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.oci import bed as oci_bed
from tests.oci.podman import Podman, missing, podman_bed

pytestmark = pytest.mark.skipif(bool(missing()), reason=str(missing()))


@pytest.fixture
def podman() -> Iterator[Podman]:
    with oci_bed.bed() as b, podman_bed(b) as p:
        yield p


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
    line = "vfhotplug: container {}: bad demand: vfhotplug.io/vfs request 0 field 'count': 99 is over the per-pod limit of 4"
    cid = podman("inspect", "--format", "{{.Id}}", "bad").stdout.strip()
    assert line.format(cid) in res.stderr  # through runc's createRuntime error, the one podman shows
    assert podman("inspect", "--format", "{{.State.Status}}", "bad").stdout.strip() != "running"
    assert bed.host.leases() == [] and bed.guest.records() == []
