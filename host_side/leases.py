"""Durable leases: one SQLite row per VF holding its state and, while leased, who holds it and why.

States (host_side.api.lease_state says what each one tells after a crash): free -> reserved -> attaching
-> attached (pod | warm) -> detaching -> free, plus quarantined. Every transition is committed before the caller performs the side effect it announces, so after a crash
the state tells what may have happened.

Durability (WAL): a commit survives a kill -9 of the service at once (it is in the kernel's page cache); only a
power loss or kernel crash can lose commits, and then WAL keeps a prefix of them. So only the commits that
come before a side effect (attaching, detaching, quarantined, a claim and its undo) wait for fsync
(synchronous=FULL). The others (reserved, attached, free, answers, inventory) do not: losing them leaves the
state of the fsync'd commit before them (reserved -> free; attached -> attaching; free -> detaching or
attaching), which reconcile settles by asking libvirt, as after a crash just before them; and the next
fsync'd commit makes them durable too. The answers need no fsync either: what loses them (the host going
down) also ends the VMs that asked, and their devices, which reconcile then frees.
Answers of calls are stored by (VM, request id), so a retry gets the same answer.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

from contract.crash_points import NO_CRASHES, CrashPoints
from contract.errors import ErrorKind, HostSideError
from contract.pci import PciAddress
from host_side.api.lease_state import HELD, LeaseState, reported
from host_side.backends.base import VfRef, VfSettings
from host_side.inventory import VfInfo
from host_side.policy import Candidate

log = logging.getLogger(__name__)

_FREE, _ATTACHED = LeaseState.FREE.value, LeaseState.ATTACHED.value  # SQL literals: partial indexes need them

_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS vfs (
  pci TEXT PRIMARY KEY,
  pool TEXT NOT NULL, pf TEXT NOT NULL, pf_pci TEXT NOT NULL, idx INTEGER NOT NULL,
  numa INTEGER, iommu_group INTEGER, iommu_group_size INTEGER NOT NULL,
  present INTEGER NOT NULL DEFAULT 1,
  state TEXT NOT NULL DEFAULT '{_FREE}',
  lease_id TEXT UNIQUE, vm TEXT, domain TEXT, pod_uid TEXT, pod_name TEXT,
  request_id TEXT, request_index INTEGER, guest_pci TEXT,
  desired TEXT, original TEXT, reason TEXT, since REAL
);
CREATE INDEX IF NOT EXISTS vfs_pool_state ON vfs (pool, state, pf, idx);
CREATE INDEX IF NOT EXISTS vfs_vm ON vfs (vm, pod_uid);
CREATE INDEX IF NOT EXISTS vfs_held ON vfs (state) WHERE state != '{_FREE}';
CREATE TABLE IF NOT EXISTS answers (
  vm TEXT NOT NULL, request_id TEXT NOT NULL, kind TEXT NOT NULL, answer TEXT NOT NULL, created REAL NOT NULL,
  PRIMARY KEY (vm, request_id)
);
"""


class StaleLease(HostSideError):
    """A lease was not in the state a transition expected (another call moved it first)."""

    kind = ErrorKind.ABORTED


@dataclass(frozen=True)
class Lease:
    lease_id: str
    state: LeaseState
    pool: str
    vf: VfRef
    numa: int | None
    vm: str
    domain: str
    pod_uid: str | None  # None: a warm spare
    pod_name: str | None
    request_id: str | None
    request_index: int
    guest_pci: PciAddress | None
    desired: VfSettings
    original: VfSettings | None
    reason: str | None
    since: float


@dataclass(frozen=True)
class Reservation:
    pci: PciAddress
    lease_id: str
    vm: str
    domain: str
    pod_uid: str | None
    pod_name: str | None
    request_id: str | None
    request_index: int
    desired: VfSettings


def _settings(text: str | None) -> VfSettings | None:
    return None if text is None else VfSettings(**json.loads(text))


def _lease(row: sqlite3.Row) -> Lease:
    desired = _settings(row["desired"])
    assert desired is not None
    return Lease(
        lease_id=row["lease_id"],
        state=LeaseState(row["state"]),
        pool=row["pool"],
        vf=VfRef(row["pf"], PciAddress.parse(row["pf_pci"]), row["idx"], PciAddress.parse(row["pci"])),
        numa=row["numa"],
        vm=row["vm"],
        domain=row["domain"],
        pod_uid=row["pod_uid"],
        pod_name=row["pod_name"],
        request_id=row["request_id"],
        request_index=row["request_index"],
        guest_pci=PciAddress.parse(row["guest_pci"]) if row["guest_pci"] else None,
        desired=desired,
        original=_settings(row["original"]),
        reason=row["reason"],
        since=row["since"],
    )


class LeaseStore:
    """The SQLite lease table under `state_dir`. Thread-safe; each method is one transaction.

    `crash_points` (tests): reached right after committing a transition into a state ("reserved" ...
    "free", "claimed", "answered"), so a test can kill the service there."""

    def __init__(self, path: Path, *, crash_points: CrashPoints = NO_CRASHES) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._durable = True
        self._db.executescript(_SCHEMA)
        self._lock = threading.RLock()
        self._crash = crash_points

    def close(self) -> None:
        with self._lock:
            self._db.close()

    @contextmanager
    def _tx(self, *, durable: bool = False) -> Iterator[sqlite3.Connection]:
        """One transaction; `durable`: COMMIT returns only once the WAL is on disk (see the module doc)."""
        with self._lock:
            if durable != self._durable:
                self._db.execute(f"PRAGMA synchronous={'FULL' if durable else 'NORMAL'}")
                self._durable = durable
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def _committed(self, state: str) -> None:
        self._crash.reached(state)

    def sync_inventory(self, vfs: Sequence[VfInfo]) -> None:
        """Adds new VFs as free, updates what sysfs says about known ones, and marks vanished ones.

        A vanished VF that is free is dropped; a held one stays (reconcile decides about its lease)."""
        now_present = {str(v.ref.pci) for v in vfs}
        with self._tx() as db:
            for v in vfs:
                db.execute(
                    "INSERT INTO vfs (pci, pool, pf, pf_pci, idx, numa, iommu_group, iommu_group_size,"
                    " present) VALUES (?,?,?,?,?,?,?,?,1) ON CONFLICT (pci) DO UPDATE SET"
                    " pool=excluded.pool, pf=excluded.pf, pf_pci=excluded.pf_pci, idx=excluded.idx,"
                    " numa=excluded.numa, iommu_group=excluded.iommu_group,"
                    " iommu_group_size=excluded.iommu_group_size, present=1",
                    (
                        str(v.ref.pci),
                        v.pool,
                        v.ref.pf,
                        str(v.ref.pf_pci),
                        v.ref.index,
                        v.numa,
                        v.iommu_group,
                        v.iommu_group_size,
                    ),
                )
            for row in db.execute("SELECT pci, state FROM vfs").fetchall():
                if row["pci"] in now_present:
                    continue
                if row["state"] == LeaseState.FREE:
                    db.execute("DELETE FROM vfs WHERE pci=?", (row["pci"],))
                else:
                    db.execute("UPDATE vfs SET present=0 WHERE pci=?", (row["pci"],))

    def candidates(self, pool: str, per_pf: int, numa: int | None = None) -> list[Candidate]:
        """The `per_pf` lowest-index usable free VFs of each PF of the pool, each with its PF's free count.

        Counting runs on the (pool, state, pf, idx) index and each PF's list is an index range with a
        LIMIT, so a call costs about the same with 64 or 4096 VFs in the pool."""
        usable = f"pool=? AND state='{_FREE}' AND present=1 AND iommu_group_size<=1 AND (? IS NULL OR numa=?)"
        out: list[Candidate] = []
        with self._lock:
            counts = self._db.execute(
                f"SELECT pf, COUNT(*) FROM vfs WHERE {usable} GROUP BY pf", (pool, numa, numa)
            ).fetchall()
            for pf, free in counts:
                rows = self._db.execute(
                    "SELECT pci, idx, numa, iommu_group, iommu_group_size FROM vfs"
                    f" WHERE {usable} AND pf=? ORDER BY idx LIMIT ?",
                    (pool, numa, numa, pf, per_pf),
                ).fetchall()
                out.extend(
                    Candidate(PciAddress.parse(r[0]), pf, r[1], r[2], r[3], r[4], LeaseState.FREE, free)
                    for r in rows
                )
        return out

    def reserve(self, picks: Sequence[Reservation]) -> list[Lease]:
        """Commits all `picks` reserved, or none (StaleLease when one is no longer free)."""
        now = time.time()
        with self._tx() as db:
            for p in picks:
                cur = db.execute(
                    f"UPDATE vfs SET state='{LeaseState.RESERVED.value}', lease_id=?, vm=?, domain=?, pod_uid=?, pod_name=?,"
                    " request_id=?, request_index=?, guest_pci=NULL, desired=?, original=NULL, reason=NULL,"
                    f" since=? WHERE pci=? AND state='{_FREE}' AND present=1",
                    (
                        p.lease_id,
                        p.vm,
                        p.domain,
                        p.pod_uid,
                        p.pod_name,
                        p.request_id,
                        p.request_index,
                        json.dumps(asdict(p.desired)),
                        now,
                        str(p.pci),
                    ),
                )
                if cur.rowcount != 1:
                    raise StaleLease(f"VF {p.pci} is no longer free; retry the call")
            leases = [self._get(db, p.lease_id) for p in picks]
        self._committed(LeaseState.RESERVED)
        return leases

    def _get(self, db: sqlite3.Connection, lease_id: str) -> Lease:
        row = db.execute("SELECT * FROM vfs WHERE lease_id=?", (lease_id,)).fetchone()
        if row is None:
            raise StaleLease(f"lease {lease_id} does not exist (any more)")
        return _lease(row)

    def get(self, lease_id: str) -> Lease | None:
        with self._lock:
            row = self._db.execute("SELECT * FROM vfs WHERE lease_id=?", (lease_id,)).fetchone()
        return None if row is None else _lease(row)

    def move(
        self,
        lease: Lease,
        to: LeaseState,
        *,
        guest_pci: PciAddress | None = None,
        original: VfSettings | None = None,
        reason: str | None = None,
    ) -> Lease:
        """Commits `lease` from the state it was read in to `to` (StaleLease if it moved meanwhile)."""
        assert to in HELD, to
        with self._tx(durable=to is not LeaseState.ATTACHED) as db:
            cur = db.execute(
                "UPDATE vfs SET state=?, guest_pci=COALESCE(?, guest_pci), original=COALESCE(?, original),"
                " reason=?, since=? WHERE lease_id=? AND state=?",
                (
                    to,
                    str(guest_pci) if guest_pci else None,
                    json.dumps(asdict(original)) if original else None,
                    reason,
                    time.time(),
                    lease.lease_id,
                    lease.state,
                ),
            )
            if cur.rowcount != 1:
                raise StaleLease(f"lease {lease.lease_id} left state {lease.state} meanwhile; retry the call")
            out = self._get(db, lease.lease_id)
        log.debug("lease %s (VF %s, VM %s) %s -> %s", lease.lease_id, lease.vf.pci, lease.vm, lease.state, to)
        self._committed(to)
        return out

    def free(self, lease: Lease) -> None:
        """Ends the lease: the VF is free again (or dropped when sysfs no longer has it)."""
        with self._tx() as db:
            cur = db.execute(
                f"UPDATE vfs SET state='{_FREE}', lease_id=NULL, vm=NULL, domain=NULL, pod_uid=NULL,"
                " pod_name=NULL, request_id=NULL, request_index=NULL, guest_pci=NULL, desired=NULL,"
                " original=NULL, reason=NULL, since=? WHERE lease_id=? AND state=?",
                (time.time(), lease.lease_id, lease.state),
            )
            if cur.rowcount != 1:
                raise StaleLease(f"lease {lease.lease_id} left state {lease.state} meanwhile")
            db.execute("DELETE FROM vfs WHERE pci=? AND present=0", (str(lease.vf.pci),))
        log.debug("lease %s ended; VF %s free", lease.lease_id, lease.vf.pci)
        self._committed(LeaseState.FREE)

    def claim_warm(
        self,
        lease: Lease,
        pod_uid: str,
        pod_name: str,
        request_id: str,
        request_index: int,
        desired: VfSettings,
    ) -> Lease | None:
        """Gives a warm spare to a pod in one transaction; None if someone else took it first."""
        with self._tx(durable=True) as db:
            cur = db.execute(
                "UPDATE vfs SET pod_uid=?, pod_name=?, request_id=?, request_index=?, desired=?, since=?"
                f" WHERE lease_id=? AND state='{_ATTACHED}' AND pod_uid IS NULL",
                (
                    pod_uid,
                    pod_name,
                    request_id,
                    request_index,
                    json.dumps(asdict(desired)),
                    time.time(),
                    lease.lease_id,
                ),
            )
            out = self._get(db, lease.lease_id) if cur.rowcount == 1 else None
        if out is not None:
            self._committed("claimed")
        return out

    def unclaim(self, spare: Lease) -> None:
        """Turns a claimed spare back into the warm one it was (rollback of a failed Attach)."""
        with self._tx(durable=True) as db:
            db.execute(
                "UPDATE vfs SET pod_uid=NULL, pod_name=NULL, request_id=NULL, desired=?, since=?"
                " WHERE lease_id=?",
                (json.dumps(asdict(spare.desired)), time.time(), spare.lease_id),
            )

    def leases(
        self,
        *,
        vm: str | None = None,
        pod_uid: str | None = None,
        request_id: str | None = None,
        states: Sequence[LeaseState] = HELD,
    ) -> list[Lease]:
        sql = f"SELECT * FROM vfs WHERE state IN ({','.join('?' * len(states))})"
        args: list[object] = list(states)
        for col, val in (("vm", vm), ("pod_uid", pod_uid), ("request_id", request_id)):
            if val is not None:
                sql += f" AND {col}=?"
                args.append(val)
        with self._lock:
            rows = self._db.execute(sql + " ORDER BY pci", args).fetchall()
        return [_lease(r) for r in rows]

    def counts(self) -> Counter[tuple[str, str]]:
        """VFs per (pool, reported state): warm spares apart from attached leases."""
        with self._lock:
            rows = self._db.execute(
                # pod_uid: any row's of the group, all NULL or none (the group says which)
                "SELECT pool, state, pod_uid, COUNT(*) FROM vfs GROUP BY pool, state, pod_uid IS NULL"
            ).fetchall()
        out: Counter[tuple[str, str]] = Counter()
        for pool, state, pod_uid, n in rows:
            out[pool, reported(LeaseState(state), pod_uid)] += n
        return out

    def used_macs(self) -> set[str]:
        with self._lock:
            rows = self._db.execute(f"SELECT desired FROM vfs WHERE state != '{_FREE}'").fetchall()
        return {json.loads(r[0])["mac"] for r in rows}

    def answer(self, vm: str, request_id: str) -> tuple[str, str] | None:
        with self._lock:
            row = self._db.execute(
                "SELECT kind, answer FROM answers WHERE vm=? AND request_id=?", (vm, request_id)
            ).fetchone()
        return None if row is None else (row[0], row[1])

    def save_answer(self, vm: str, request_id: str, kind: str, answer: str) -> None:
        with self._tx() as db:
            db.execute(
                "INSERT OR REPLACE INTO answers (vm, request_id, kind, answer, created) VALUES (?,?,?,?,?)",
                (vm, request_id, kind, answer, time.time()),
            )
        self._committed("answered")

    def prune_answers(self, older_than_s: float) -> None:
        with self._tx() as db:
            db.execute("DELETE FROM answers WHERE created < ?", (time.time() - older_than_s,))
