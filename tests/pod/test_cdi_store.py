"""The CDI spec store on a temp folder: atomic writes, removal, stale specs at start, a crash mid-write."""

import json
import multiprocessing
import os
from dataclasses import replace
from pathlib import Path

import pytest

from tests.pod.test_cdi_spec import GOOD
from vm_side.cdi_spec import CdiDevice, CdiSpecError
from vm_side.cdi_store import CdiStore


def test_write_names_the_file_by_pod_and_holds_the_spec(tmp_path: Path) -> None:
    store = CdiStore(tmp_path / "cdi")  # created on first write
    path = store.write("p1", GOOD)
    assert path == tmp_path / "cdi" / "vfhotplug.io-vf-p1.json"
    doc = json.loads(path.read_text())
    assert doc["kind"] == "vfhotplug.io/vf" and doc["cdiVersion"] == "0.4.0"
    assert [d["name"] for d in doc["devices"]] == ["p1-net1"]
    assert store.pod_uids() == ["p1"]
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name]  # no temp file left


def test_invalid_spec_is_not_written(tmp_path: Path) -> None:
    store = CdiStore(tmp_path)
    store.write("p1", GOOD)
    before = store.path("p1").read_text()
    bad = replace(GOOD, devices=(CdiDevice("-x", GOOD.devices[0].edits),))
    with pytest.raises(CdiSpecError):
        store.write("p1", bad)
    assert store.path("p1").read_text() == before


def test_remove_is_idempotent(tmp_path: Path) -> None:
    store = CdiStore(tmp_path)
    store.write("p1", GOOD)
    store.remove("p1")
    store.remove("p1")
    store.remove("never-written")
    assert store.pod_uids() == []


def test_reconcile_removes_specs_of_pods_without_records_only(tmp_path: Path) -> None:
    store = CdiStore(tmp_path)
    for uid in ("live", "gone", "also-gone"):
        store.write(uid, GOOD)
    other = tmp_path / "nvidia.com-gpu.json"  # another vendor's spec in the same folder
    other.write_text("{}")
    assert store.reconcile({"live"}) == ["also-gone", "gone"]
    assert store.pod_uids() == ["live"]
    assert other.read_text() == "{}"


def _write_and_die(spec_dir: str) -> None:
    # A real process death between the temp file's write and its rename.
    def die(*_args: object) -> None:
        os._exit(9)

    Path.replace = die  # type: ignore[method-assign,assignment]
    CdiStore(Path(spec_dir)).write("p1", GOOD)


def test_crash_mid_write_leaves_the_old_spec_whole(tmp_path: Path) -> None:
    store = CdiStore(tmp_path)
    store.write("p1", GOOD)
    old = store.path("p1").read_text()
    child = multiprocessing.get_context("fork").Process(target=_write_and_die, args=(str(tmp_path),))
    child.start()
    child.join(30)
    assert child.exitcode == 9
    # The runtime sees the old spec, whole; the half-done temp file has a name no runtime reads.
    assert store.path("p1").read_text() == old
    leftovers = [p.name for p in tmp_path.iterdir() if p.name != store.path("p1").name]
    assert leftovers == [".vfhotplug.io-vf-p1.json.tmp"]
    store.reconcile({"p1"})
    assert [p.name for p in tmp_path.iterdir()] == [store.path("p1").name]


def test_crash_on_first_write_leaves_no_spec(tmp_path: Path) -> None:
    child = multiprocessing.get_context("fork").Process(target=_write_and_die, args=(str(tmp_path),))
    child.start()
    child.join(30)
    assert child.exitcode == 9
    store = CdiStore(tmp_path)
    assert store.pod_uids() == []
    assert not list(tmp_path.glob("*.json"))
