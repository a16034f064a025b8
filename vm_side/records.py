"""Durable per-pod records and the release journal.

A pod record says what was done for a pod so far, with what is needed to undo it: the netns path (Stop and
Remove events do not carry it), the granted VFs, per-VF binding progress, original names and drivers.
Files are replaced atomically (write, fsync, rename, fsync the folder). The journal holds host releases
still owed; `ReleaseWorker` retries them with backoff until the host confirms.
"""

from __future__ import annotations

import json
import logging
import os
import re
import threading
import time
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import asdict, dataclass, field, replace
from enum import StrEnum
from pathlib import Path
from typing import Any

from contract.host_api import GrantedVf, HostApi, HostCallError
from contract.pci import PciAddress
from vm_side.demand import Mode, VfSlot

log = logging.getLogger(__name__)

_UID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")
# Inside the records folder both entries share (the NRI plugin's and the OCI hooks').
PODS_SUBDIR = "pods"
JOURNAL_SUBDIR = "journal"


class PodState(StrEnum):
    PREPARING = "preparing"
    READY = "ready"
    RELEASING = "releasing"


class Entry(StrEnum):
    """Which entry manages a pod; both share one records folder."""

    NRI = "nri"  # a pod containerd reports: reconciled against containerd's pod list
    OCI = "oci"  # a container of the OCI hooks: containerd does not know it, its poststop releases it


@dataclass(frozen=True)
class VfBinding:
    """One granted VF and how far its binding got."""

    slot: VfSlot
    grant: GrantedVf
    guest_pci: PciAddress | None  # where the VF was found in the guest (the grant's, when the host knew it)
    guest_ifname: str | None = None  # its name in the guest netns before we moved it (kernel mode)
    original_driver: str | None = None  # recorded before a driver change (dpdk mode)
    bound: bool = False  # the mode's binding is complete
    iommu_group: str | None = None  # dpdk: the /dev/vfio node name
    vfio_group_dev: tuple[int, int] | None = None  # dpdk: major, minor of /dev/vfio/<group>


@dataclass(frozen=True)
class StepDone:
    """A pluggable step (VPP, DPDK env) that completed, with the notes its undo needs."""

    name: str
    notes: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class PodRecord:
    pod_uid: str
    pod_name: str
    netns: str
    state: PodState
    attempt: int
    request_id: str
    slots: tuple[VfSlot, ...]
    vfs: tuple[VfBinding, ...] = ()
    steps: tuple[StepDone, ...] = ()
    vfio_container_dev: tuple[int, int] | None = None  # major, minor of /dev/vfio/vfio
    run_dir: str | None = None  # per-pod folder with device-info files and the DPDK runtime folder
    entry: Entry = Entry.NRI

    def with_vf(self, vf: VfBinding) -> PodRecord:
        return replace(self, vfs=tuple(vf if v.grant.lease_id == vf.grant.lease_id else v for v in self.vfs))


class RecordError(ValueError):
    """A record file cannot be read; it is moved aside (never deleted) and the message names it."""


def check_uid(pod_uid: str) -> str:
    if not _UID_RE.fullmatch(pod_uid):
        raise ValueError(f"pod uid {pod_uid!r} cannot name a record file (letters, digits, '_', '.', '-')")
    return pod_uid


def write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with tmp.open("w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    tmp.replace(path)
    dfd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


def _slot_from(raw: dict[str, Any]) -> VfSlot:
    return VfSlot(**{**raw, "mode": Mode(raw["mode"])})


def _pair(raw: list[int] | None) -> tuple[int, int] | None:
    return (int(raw[0]), int(raw[1])) if raw else None


def _to_json(rec: PodRecord) -> str:
    def conv(o: Any) -> Any:
        if isinstance(o, dict):
            return {k: conv(v) for k, v in o.items()}
        if isinstance(o, list | tuple):
            return [conv(v) for v in o]
        if isinstance(o, PciAddress):
            return str(o)
        return o

    # asdict turns PciAddress into a dict of ints; keep it as its sysfs spelling instead.
    raw = asdict(rec)
    for vf, b in zip(raw["vfs"], rec.vfs, strict=True):
        vf["guest_pci"] = _pci_text(b.guest_pci)
        vf["grant"]["host_pci"] = str(b.grant.host_pci)
        vf["grant"]["guest_pci"] = _pci_text(b.grant.guest_pci)
    return json.dumps(conv(raw), indent=1, sort_keys=True)


def _pci_text(pci: PciAddress | None) -> str | None:
    return str(pci) if pci is not None else None


def _pci(text: str | None) -> PciAddress | None:
    return PciAddress.parse(text) if text else None


def _from_json(text: str) -> PodRecord:
    raw = json.loads(text)
    vfs = tuple(
        VfBinding(
            **{
                **v,
                "slot": _slot_from(v["slot"]),
                "grant": GrantedVf(
                    **{
                        **v["grant"],
                        "host_pci": PciAddress.parse(v["grant"]["host_pci"]),
                        "guest_pci": _pci(v["grant"]["guest_pci"]),
                    }
                ),
                "guest_pci": _pci(v["guest_pci"]),
                "vfio_group_dev": _pair(v["vfio_group_dev"]),
            }
        )
        for v in raw["vfs"]
    )
    return PodRecord(
        **{
            **raw,
            "state": PodState(raw["state"]),
            "slots": tuple(_slot_from(s) for s in raw["slots"]),
            "vfs": vfs,
            "steps": tuple(StepDone(s["name"], dict(s["notes"])) for s in raw["steps"]),
            "vfio_container_dev": _pair(raw["vfio_container_dev"]),
            "entry": Entry(raw.get("entry", Entry.NRI)),  # records written before there were two entries
        }
    )


class RecordStore:
    """Pod records as `<uid>.json` in one folder, plus `<uid>.attempt` counters that outlive a rollback."""

    def __init__(self, directory: Path) -> None:
        self.dir = directory
        self.dir.mkdir(parents=True, exist_ok=True)

    def _path(self, pod_uid: str, suffix: str = ".json") -> Path:
        return self.dir / f"{check_uid(pod_uid)}{suffix}"

    def save(self, rec: PodRecord) -> None:
        write_atomic(self._path(rec.pod_uid), _to_json(rec))

    def load(self, pod_uid: str) -> PodRecord | None:
        path = self._path(pod_uid)
        try:
            return _from_json(path.read_text())
        except FileNotFoundError:
            return None
        except (ValueError, KeyError, TypeError) as e:
            aside = path.with_suffix(".corrupt")
            path.replace(aside)
            raise RecordError(f"pod record {path} is unreadable ({e}); kept as {aside} for inspection") from e

    def remove(self, pod_uid: str) -> None:
        self._path(pod_uid).unlink(missing_ok=True)

    def all(self) -> list[PodRecord]:
        out = []
        for path in sorted(self.dir.glob("*.json")):
            try:
                rec = self.load(path.stem)
            except RecordError as e:
                log.error("%s", e)
                continue
            if rec is not None:
                out.append(rec)
        return out

    def next_attempt(self, pod_uid: str) -> int:
        path = self._path(pod_uid, ".attempt")
        try:
            n = int(path.read_text()) + 1
        except (FileNotFoundError, ValueError):
            n = 1
        write_atomic(path, f"{n}\n")
        return n

    def forget(self, pod_uid: str) -> None:
        """Drop the attempt counter once the pod is gone for good."""
        self._path(pod_uid, ".attempt").unlink(missing_ok=True)

    def attempt_uids(self) -> list[str]:
        return sorted(p.stem for p in self.dir.glob("*.attempt"))


@dataclass(frozen=True)
class OwedRelease:
    pod_uid: str
    pod_name: str
    request_id: str
    since: float  # time.time() of the first failed try


class ReleaseJournal:
    """Host releases still owed, one file per pod."""

    def __init__(self, directory: Path) -> None:
        self.dir = directory
        self.dir.mkdir(parents=True, exist_ok=True)

    def add(self, entry: OwedRelease) -> None:
        write_atomic(self.dir / f"{check_uid(entry.pod_uid)}.json", json.dumps(asdict(entry)))

    def remove(self, pod_uid: str) -> None:
        (self.dir / f"{check_uid(pod_uid)}.json").unlink(missing_ok=True)

    def get(self, pod_uid: str) -> OwedRelease | None:
        try:
            return OwedRelease(**json.loads((self.dir / f"{check_uid(pod_uid)}.json").read_text()))
        except FileNotFoundError:
            return None

    def entries(self) -> list[OwedRelease]:
        return [OwedRelease(**json.loads(p.read_text())) for p in sorted(self.dir.glob("*.json"))]


def settle(host: HostApi, entry: OwedRelease, timeout_s: float) -> None:
    """Release the pod's leases on the host. NOT_FOUND counts as done: the host holds nothing for it.

    Raises:
        HostCallError: the host did not confirm.
    """
    try:
        host.release(entry.pod_uid, entry.request_id, timeout_s)
    except HostCallError as e:
        if e.code != "NOT_FOUND":
            raise
    log.info("pod %s (%s): host released its leases", entry.pod_name, entry.pod_uid)


class ReleaseWorker:
    """Retries journaled releases in a background thread with exponential backoff until confirmed."""

    def __init__(
        self,
        journal: ReleaseJournal,
        host: HostApi,
        timeout_s: float = 10.0,
        backoff_s: tuple[float, float] = (0.5, 30.0),
        clock: Callable[[], float] = time.monotonic,
        pod_guard: Callable[[str], AbstractContextManager[None]] = lambda _uid: nullcontext(),
    ) -> None:
        self._journal = journal
        self._host = host
        self._timeout_s = timeout_s
        self._backoff = backoff_s
        self._clock = clock
        # Held around each retry so a new attach for the same pod cannot slip in between (and be released).
        self._pod_guard = pod_guard
        self._due: dict[str, tuple[float, float]] = {}  # pod uid -> (next try, current delay)
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def run_once(self, force: bool = False) -> int:
        """Try every due entry (every entry with `force`) once; returns how many are still owed."""
        with self._lock:
            now = self._clock()
            left = 0
            for entry in self._journal.entries():
                due, delay = self._due.get(entry.pod_uid, (now, self._backoff[0]))
                if due > now and not force:
                    left += 1
                    continue
                try:
                    with self._pod_guard(entry.pod_uid):
                        if self._journal.get(entry.pod_uid) != entry:
                            continue  # settled meanwhile by the pod's own next prepare
                        settle(self._host, entry, self._timeout_s)
                except HostCallError as e:
                    log.warning(
                        "pod %s (%s): release still owed (%s); retry in %.1fs",
                        entry.pod_name,
                        entry.pod_uid,
                        e,
                        delay,
                    )
                    self._due[entry.pod_uid] = (now + delay, min(delay * 2, self._backoff[1]))
                    left += 1
                    continue
                self._journal.remove(entry.pod_uid)
                self._due.pop(entry.pod_uid, None)
            return left

    def kick(self) -> None:
        """A new entry was added: try again now rather than at the next backoff tick."""
        self._wake.set()

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="vfhotplug-release-journal", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join()

    def _run(self) -> None:
        while not self._stop.is_set():
            left = self.run_once()
            self._wake.wait(self._backoff[0] if left else None)
            self._wake.clear()


def list_pod_records(records_dir: Path) -> list[PodRecord]:
    """Every pod record in a records folder, NRI pods and hook-managed containers (`oci/<id>`) alike.

    Read-only, for status views: an unreadable record is logged and skipped, never moved or changed.
    """
    out = []
    for path in sorted((records_dir / PODS_SUBDIR).glob("*.json")):
        try:
            out.append(_from_json(path.read_text()))
        except FileNotFoundError:
            continue  # released while we listed
        except (ValueError, KeyError, TypeError) as e:
            log.error("pod record %s is unreadable (%s); skipped", path, e)
    return out


def list_owed_releases(records_dir: Path) -> list[OwedRelease]:
    """Host releases still owed (journaled while the host was unreachable), read-only."""
    journal = records_dir / JOURNAL_SUBDIR
    return ReleaseJournal(journal).entries() if journal.is_dir() else []
