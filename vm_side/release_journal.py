"""Host releases still owed (the host was unreachable when a pod ended), one file per pod, and the worker
that retries them with backoff until the host confirms."""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path

from contract.errors import ErrorKind
from contract.host_api import HostApi, HostCallError
from vm_side.pod_record import JOURNAL_SUBDIR, check_uid
from vm_side.record_store import write_atomic

log = logging.getLogger(__name__)


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
        if e.code != ErrorKind.NOT_FOUND:
            raise
    log.info("pod %s (%s): host released its leases", entry.pod_name, entry.pod_uid)


@dataclass(eq=False)  # a service: compared by identity
class ReleaseWorker:
    """Retries journaled releases in a background thread with exponential backoff until confirmed."""

    journal: ReleaseJournal
    host: HostApi
    timeout_s: float = 10.0
    backoff_s: tuple[float, float] = (0.5, 30.0)  # first and longest delay between tries
    clock: Callable[[], float] = time.monotonic
    # Held around each retry so a new attach for the same pod cannot slip in between (and be released).
    pod_guard: Callable[[str], AbstractContextManager[None]] = lambda _uid: nullcontext()
    _due: dict[str, tuple[float, float]] = field(default_factory=dict, init=False)  # uid -> (next, delay)
    _wake: threading.Event = field(default_factory=threading.Event, init=False)
    _stop: threading.Event = field(default_factory=threading.Event, init=False)
    _thread: threading.Thread | None = field(default=None, init=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False)

    def run_once(self, force: bool = False) -> int:
        """Try every due entry (every entry with `force`) once; returns how many are still owed."""
        with self._lock:
            now = self.clock()
            left = 0
            for entry in self.journal.entries():
                due, delay = self._due.get(entry.pod_uid, (now, self.backoff_s[0]))
                if due > now and not force:
                    left += 1
                    continue
                try:
                    with self.pod_guard(entry.pod_uid):
                        if self.journal.get(entry.pod_uid) != entry:
                            continue  # settled meanwhile by the pod's own next prepare
                        settle(self.host, entry, self.timeout_s)
                except HostCallError as e:
                    log.warning(
                        "pod %s (%s): release still owed (%s); retry in %.1fs",
                        entry.pod_name,
                        entry.pod_uid,
                        e,
                        delay,
                    )
                    self._due[entry.pod_uid] = (now + delay, min(delay * 2, self.backoff_s[1]))
                    left += 1
                    continue
                self.journal.remove(entry.pod_uid)
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
            self._wake.wait(self.backoff_s[0] if left else None)
            self._wake.clear()


def list_owed_releases(records_dir: Path) -> list[OwedRelease]:
    """Host releases still owed (journaled while the host was unreachable), read-only."""
    journal = records_dir / JOURNAL_SUBDIR
    return ReleaseJournal(journal).entries() if journal.is_dir() else []
