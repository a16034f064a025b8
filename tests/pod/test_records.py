import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

import pytest

from contract.host_api import GrantedVf
from contract.pci import PciAddress
from host_side.backends.sim import SimBackend
from tests.pod.fakes import FakeHost
from vm_side.demand import Mode, VfSlot
from vm_side.pod_record import PodRecord, PodState, RecordError, StepDone, VfBinding
from vm_side.record_store import RecordStore
from vm_side.release_journal import OwedRelease, ReleaseJournal, ReleaseWorker

SLOT = VfSlot(0, "fast", Mode.DPDK, "net1", mac="02:00:00:00:00:01", vlan=7, trust=True, numa=1)
GRANT = GrantedVf("L1", "fast", PciAddress.parse("0000:3b:02.1"), None, "02:00:00:00:00:01", 7, 1, 0)
RECORD = PodRecord(
    pod_uid="3f1c-uid",
    pod_name="ns/pod",
    netns="/var/run/netns/x",
    state=PodState.READY,
    attempt=2,
    request_id="3f1c-uid/2",
    slots=(SLOT,),
    vfs=(
        VfBinding(
            SLOT,
            GRANT,
            PciAddress.parse("0000:10:00.0"),
            guest_ifname="eth3",
            original_driver="iavf",
            bound=True,
            iommu_group="16",
            vfio_group_dev=(511, 16),
        ),
    ),
    steps=(StepDone("vpp", {"sw_if_index": "3"}),),
    vfio_container_dev=(10, 196),
    run_dir="run/3f1c-uid",
)


def test_record_round_trips_through_its_file(tmp_path: Path):
    store = RecordStore(tmp_path)
    store.save(RECORD)
    assert store.load("3f1c-uid") == RECORD
    assert json.loads((tmp_path / "3f1c-uid.json").read_text())["vfs"][0]["guest_pci"] == "0000:10:00.0"
    assert store.all() == [RECORD]
    store.remove("3f1c-uid")
    store.remove("3f1c-uid")
    assert store.load("3f1c-uid") is None and store.all() == []


def test_attempts_outlive_the_record_until_forgotten(tmp_path: Path):
    store = RecordStore(tmp_path)
    assert [store.next_attempt("u"), store.next_attempt("u")] == [1, 2]
    assert store.attempt_uids() == ["u"]
    store.forget("u")
    assert store.next_attempt("u") == 1


def test_unreadable_record_is_kept_aside_not_lost(tmp_path: Path):
    store = RecordStore(tmp_path)
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(RecordError, match=r"bad.json is unreadable .* kept as .*bad.corrupt"):
        store.load("bad")
    assert (tmp_path / "bad.corrupt").read_text() == "{not json"
    assert store.all() == []


def test_uid_that_cannot_name_a_file_is_refused(tmp_path: Path):
    with pytest.raises(ValueError, match="cannot name a record file"):
        RecordStore(tmp_path).load("../etc/passwd")


def test_worker_retries_with_backoff_until_the_host_confirms(tmp_path: Path):
    host = FakeHost(SimBackend(tmp_path / "sys"), SimBackend(tmp_path / "sys"), {})
    journal = ReleaseJournal(tmp_path / "journal")
    journal.add(OwedRelease("u1", "pod-1", "u1/1/release", 0.0))
    now = [100.0]
    worker = ReleaseWorker(journal, host, backoff_s=(1.0, 4.0), clock=lambda: now[0])
    host.up = False
    tries = []
    for t in (100.0, 100.5, 101.0, 102.9, 103.0, 107.0, 111.0):
        now[0] = t
        worker.run_once()
        tries.append(host.calls.count("release"))
    # Tries at 100, 101 (+1 s), 103 (+2 s), 107 (+4 s), 111 (+4 s, the cap).
    assert tries == [1, 1, 2, 2, 3, 4, 5]
    host.up = True
    now[0] = 200.0
    assert worker.run_once() == 0
    assert journal.entries() == []


def test_worker_skips_an_entry_settled_while_it_waited_for_the_pod(tmp_path: Path):
    host = FakeHost(SimBackend(tmp_path / "sys"), SimBackend(tmp_path / "sys"), {})
    journal = ReleaseJournal(tmp_path / "journal")
    journal.add(OwedRelease("u1", "pod-1", "u1/1/release", 0.0))

    @contextmanager
    def pod_guard(uid: str) -> Iterator[None]:
        # The pod's next prepare held the lock, settled the entry itself and attached anew.
        journal.remove(uid)
        yield

    assert ReleaseWorker(journal, host, pod_guard=pod_guard).run_once() == 0
    assert host.calls == []


def test_only_ready_records_and_journal_entries_are_fsynced(tmp_path: Path, monkeypatch):
    synced: list[int] = []
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        synced.append(fd)
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    store = RecordStore(tmp_path / "pods")
    store.next_attempt(RECORD.pod_uid)
    store.save(replace(RECORD, state=PodState.PREPARING))
    store.save(replace(RECORD, state=PodState.RELEASING))
    assert synced == []
    assert store.load(RECORD.pod_uid) == replace(RECORD, state=PodState.RELEASING)  # replaced all the same
    store.save(RECORD)
    assert len(synced) == 2  # the file and its folder
    ReleaseJournal(tmp_path / "journal").add(OwedRelease(RECORD.pod_uid, "ns/pod", "r1", 0.0))
    assert len(synced) == 4
