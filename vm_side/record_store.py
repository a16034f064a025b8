"""Pod records on disk: one `<uid>.json` per pod, always replaced atomically (write, rename), plus
`<uid>.attempt` counters that outlive a rollback.

Only a `ready` record is made durable (fsync of the file and the folder, about a millisecond each here).
The states on the way (`preparing`, `releasing`) must outlive a crash of the plugin, which the page cache
does; after a power loss the VM's pods are gone with it, and reconcile plus the host's Sync free their
leases, so fsyncing them would only slow every pod start."""

from __future__ import annotations

import logging
import os
from pathlib import Path

from vm_side.pod_record import (
    PODS_SUBDIR,
    PodRecord,
    PodState,
    RecordError,
    check_uid,
    record_from_json,
    record_to_json,
)

log = logging.getLogger(__name__)


class StateWriteError(OSError):
    """A record or journal entry could not be written (most often: the state folder's disk is full)."""


def write_atomic(path: Path, text: str, durable: bool = True) -> None:
    """Replace `path` with `text` atomically (`durable`: fsynced, survives a power loss too), or raise
    StateWriteError leaving the old file and no temp file."""
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        with tmp.open("w") as f:
            f.write(text)
            if durable:
                f.flush()
                os.fsync(f.fileno())
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise StateWriteError(
            e.errno,
            f"cannot write {path.name} in {path.parent}: {e.strerror}; free space in the state folder",
        ) from e
    tmp.replace(path)
    if not durable:
        return
    dfd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


class RecordStore:
    """Pod records as `<uid>.json` in one folder, plus `<uid>.attempt` counters that outlive a rollback."""

    def __init__(self, directory: Path) -> None:
        self.dir = directory
        self.dir.mkdir(parents=True, exist_ok=True)

    def _path(self, pod_uid: str, suffix: str = ".json") -> Path:
        return self.dir / f"{check_uid(pod_uid)}{suffix}"

    def save(self, rec: PodRecord) -> None:
        write_atomic(self._path(rec.pod_uid), record_to_json(rec), durable=rec.state is PodState.READY)

    def load(self, pod_uid: str) -> PodRecord | None:
        path = self._path(pod_uid)
        try:
            return record_from_json(path.read_text())
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
        write_atomic(path, f"{n}\n", durable=False)  # request ids carry a time stamp too: unique anyway
        return n

    def forget(self, pod_uid: str) -> None:
        """Drop the attempt counter once the pod is gone for good."""
        self._path(pod_uid, ".attempt").unlink(missing_ok=True)

    def attempt_uids(self) -> list[str]:
        return sorted(p.stem for p in self.dir.glob("*.attempt"))


def list_pod_records(records_dir: Path) -> list[PodRecord]:
    """Every pod record in a records folder, NRI pods and hook-managed containers (`oci/<id>`) alike.

    Read-only, for status views: an unreadable record is logged and skipped, never moved or changed.
    """
    out = []
    for path in sorted((records_dir / PODS_SUBDIR).glob("*.json")):
        try:
            out.append(record_from_json(path.read_text()))
        except FileNotFoundError:
            continue  # released while we listed
        except (ValueError, KeyError, TypeError) as e:
            log.error("pod record %s is unreadable (%s); skipped", path, e)
    return out
