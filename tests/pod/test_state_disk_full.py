"""PodLifecycle with its state folder on a full disk (a real tmpfs filled to ENOSPC): a start fails with a
message that says so and takes nothing; a release still gives the VFs back; nothing half-written is left."""

from __future__ import annotations

import errno
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.pod.conftest import Guest, needs_root
from tests.pod.lifecycle_checks import assert_clean, soon
from vm_side.demand import ANNOTATION
from vm_side.lifecycle import PodError

pytestmark = needs_root


@pytest.fixture
def small_disk(guest: Guest) -> Iterator[Guest]:
    guest.records.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "vfh-test", str(guest.records)], check=True)
    try:
        yield guest
    finally:
        subprocess.run(["umount", "-l", str(guest.records)], check=True)


def _fill(folder: Path) -> Path:
    filler = folder / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        while os.write(fd, b"\0" * 4096):
            pass
    except OSError as e:
        assert e.errno == errno.ENOSPC
    finally:
        os.close(fd)
    return filler


def test_a_start_on_a_full_disk_fails_naming_it_and_takes_nothing(small_disk: Guest, make_netns) -> None:
    g = small_disk
    lc = g.lifecycle()  # creates its folders while there is room
    filler = _fill(g.records)
    with pytest.raises((PodError, OSError), match="free space in the state folder"):
        lc.prepare("u1", "pod-1", make_netns(), {ANNOTATION: "1"}, soon())
    filler.unlink()
    assert_clean(g)
    assert not [p for p in g.records.rglob(".*.tmp")], "a half-written temp file was left"


def test_a_release_on_a_full_disk_still_gives_the_vfs_back(small_disk: Guest, make_netns) -> None:
    g = small_disk
    lc = g.lifecycle()
    netns = make_netns()
    assert lc.prepare("u2", "pod-2", netns, {ANNOTATION: "2"}, soon()) is not None
    assert len(g.host.leases) == 2
    filler = _fill(g.records)
    lc.release("u2", soon())
    assert g.host.leases == {}, "the VFs were not given back"
    assert lc.store.load("u2") is None
    filler.unlink()
    assert_clean(g, netns)


def test_a_release_with_neither_host_nor_disk_keeps_the_record_for_reconcile(
    small_disk: Guest, make_netns
) -> None:
    g = small_disk
    lc = g.lifecycle()
    netns = make_netns()
    lc.prepare("u3", "pod-3", netns, {ANNOTATION: "1"}, soon())
    filler = _fill(g.records)
    g.host.up = False
    lc.release("u3", soon(2))
    assert lc.store.load("u3") is not None, "the record naming the VF was lost"
    g.host.up = True
    filler.unlink()
    report = g.lifecycle().reconcile({}, deadline=soon())
    assert report.undone == ("u3",)
    assert_clean(g, netns)
