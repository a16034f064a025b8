"""`vfhotplug status` reads one records folder that NRI pods and hook-managed containers share."""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

from oci_hooks.hooks import container_name
from tests.pod.test_records import RECORD
from vm_side.pod_record import JOURNAL_SUBDIR, PODS_SUBDIR
from vm_side.record_store import RecordStore, list_pod_records
from vm_side.release_journal import OwedRelease, ReleaseJournal, list_owed_releases


def test_lists_nri_pods_and_containers_without_touching_bad_files(tmp_path: Path):
    store = RecordStore(tmp_path / PODS_SUBDIR)
    container = dataclasses.replace(RECORD, pod_uid="c1", pod_name=container_name("c1"), request_id="c1/1")
    store.save(RECORD)
    store.save(container)
    bad = tmp_path / PODS_SUBDIR / "broken.json"
    bad.write_text("{not json")
    owed = OwedRelease("c0", container_name("c0"), "c0/1/release", time.time())
    ReleaseJournal(tmp_path / JOURNAL_SUBDIR).add(owed)

    listed = list_pod_records(tmp_path)
    assert [(p.pod_uid, p.pod_name) for p in listed] == [("3f1c-uid", "ns/pod"), ("c1", "oci/c1")]
    assert listed[1] == container
    assert bad.read_text() == "{not json"  # a status view never moves or changes a record
    assert list_owed_releases(tmp_path) == [owed]


def test_empty_or_missing_folder(tmp_path: Path):
    assert list_pod_records(tmp_path / "nothing") == []
    assert list_owed_releases(tmp_path / "nothing") == []
    assert not (tmp_path / "nothing").exists()
