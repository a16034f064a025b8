"""`vfhotplug status` reads one records folder that NRI pods and hook-managed containers share."""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

from oci_hooks.hooks import container_name
from tests.pod.test_records import RECORD
from vm_side import records as r


def test_lists_nri_pods_and_containers_without_touching_bad_files(tmp_path: Path):
    store = r.RecordStore(tmp_path / r.PODS_SUBDIR)
    container = dataclasses.replace(RECORD, pod_uid="c1", pod_name=container_name("c1"), request_id="c1/1")
    store.save(RECORD)
    store.save(container)
    bad = tmp_path / r.PODS_SUBDIR / "broken.json"
    bad.write_text("{not json")
    owed = r.OwedRelease("c0", container_name("c0"), "c0/1/release", time.time())
    r.ReleaseJournal(tmp_path / r.JOURNAL_SUBDIR).add(owed)

    listed = r.list_pod_records(tmp_path)
    assert [(p.pod_uid, p.pod_name) for p in listed] == [("3f1c-uid", "ns/pod"), ("c1", "oci/c1")]
    assert listed[1] == container
    assert bad.read_text() == "{not json"  # a status view never moves or changes a record
    assert r.list_owed_releases(tmp_path) == [owed]


def test_empty_or_missing_folder(tmp_path: Path):
    assert r.list_pod_records(tmp_path / "nothing") == []
    assert r.list_owed_releases(tmp_path / "nothing") == []
    assert not (tmp_path / "nothing").exists()
