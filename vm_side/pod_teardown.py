"""The stop path, also every rollback: undo a pod's steps in reverse, unbind its VFs, release them on the
host, and journal the release when the host does not confirm it."""

from __future__ import annotations

import logging
import shutil
import threading
import time
from dataclasses import dataclass, field, replace

from contract.crash_points import CrashPoints
from contract.host_api import HostApi, HostCallError
from vm_side.binder import Binder, BindError
from vm_side.cdi_store import CdiStore
from vm_side.pod_locks import PodLocks
from vm_side.pod_record import PodRecord, PodState
from vm_side.pod_steps import PodStep
from vm_side.record_store import RecordStore, StateWriteError
from vm_side.release_journal import OwedRelease, ReleaseJournal, ReleaseWorker, settle

log = logging.getLogger(__name__)


@dataclass(eq=False)  # a service: compared by identity
class PodTeardown:
    host: HostApi
    store: RecordStore
    journal: ReleaseJournal
    worker: ReleaseWorker
    binder: Binder
    steps: tuple[PodStep, ...]
    locks: PodLocks
    crash: CrashPoints
    host_timeout_s: float
    cdi: CdiStore | None = None
    _background_guard: threading.Lock = field(default_factory=threading.Lock, init=False)
    _background: list[threading.Thread] = field(default_factory=list, init=False)

    def teardown(self, rec: PodRecord, release_timeout_s: float | None = None) -> None:
        """Undo in reverse, then release on the host; journal the release if the host does not confirm.
        The caller holds the pod's lock."""
        rec = replace(rec, state=PodState.RELEASING)
        try:
            self.store.save(rec)
        except StateWriteError as e:
            # Giving the VFs back matters more than marking it: a crash from here on leaves the older record,
            # which names the same VFs, and the next reconcile undoes it all the same.
            log.error("pod %s (%s): %s; releasing without the mark", rec.pod_name, rec.pod_uid, e)
        self.crash.reached("releasing")
        self._remove_cdi_spec(rec)
        self._undo_steps(rec)
        if rec.run_dir is not None:
            shutil.rmtree(rec.run_dir, ignore_errors=True)
        for vf in reversed(rec.vfs):
            try:
                rec = rec.with_vf(self.binder.unbind(rec, vf))
            except BindError as e:
                # The host's detach takes the VF out of the guest wherever it is; nothing leaks.
                log.error("pod %s (%s): %s; the host detach will remove it", rec.pod_name, rec.pod_uid, e)
        self.crash.reached("unbound")
        owed = OwedRelease(rec.pod_uid, rec.pod_name, f"{rec.request_id}/release", time.time())
        try:
            settle(self.host, owed, release_timeout_s or self.host_timeout_s)
            self.crash.reached("host release")
        except HostCallError as e:
            log.warning(
                "pod %s (%s): host release not confirmed (%s); journaled", rec.pod_name, rec.pod_uid, e
            )
            try:
                self.journal.add(owed)
            except StateWriteError as je:
                # Neither the host nor the disk: the record stays, and the next reconcile releases it.
                log.error(
                    "pod %s (%s): %s; the record is kept for the next reconcile",
                    rec.pod_name,
                    rec.pod_uid,
                    je,
                )
                return
            self.worker.kick()
        self.store.remove(rec.pod_uid)

    def teardown_later(self, rec: PodRecord) -> None:
        """Marks the record `releasing` and tears it down in a background thread (after the pod's lock)."""
        self.store.save(replace(rec, state=PodState.RELEASING))

        def undo() -> None:
            with self.locks.hold(rec.pod_uid):
                left = self.store.load(rec.pod_uid)
                if left is not None and left.state is PodState.RELEASING:
                    self.teardown(left)

        t = threading.Thread(target=undo, name=f"rollback-{rec.pod_uid}", daemon=True)
        with self._background_guard:
            self._background = [b for b in self._background if b.is_alive()] + [t]
        t.start()

    def wait_background(self, timeout_s: float) -> bool:
        """Waits for rollbacks moved to the background; True when none is left running."""
        deadline = time.monotonic() + timeout_s
        with self._background_guard:
            pending = list(self._background)
        for t in pending:
            t.join(max(deadline - time.monotonic(), 0))
        return not any(t.is_alive() for t in pending)

    def _remove_cdi_spec(self, rec: PodRecord) -> None:
        """First of all, so no container created from now on is given devices about to go."""
        if self.cdi is None:
            return
        try:
            self.cdi.remove(rec.pod_uid)
        except OSError as e:  # the VFs must go back all the same; reconcile retries the file
            log.error("pod %s (%s): cannot remove its CDI spec (%s)", rec.pod_name, rec.pod_uid, e)

    def _undo_steps(self, rec: PodRecord) -> None:
        by_name = {s.name: s for s in self.steps}
        for done in reversed(rec.steps):
            step = by_name.get(done.name)
            if step is None:
                log.error("pod %s: no step %r to undo (plugin changed?); skipped", rec.pod_uid, done.name)
                continue
            try:
                step.undo(rec, done.notes)
            except Exception:
                log.exception(
                    "pod %s (%s): undo of %s failed; continuing", rec.pod_name, rec.pod_uid, done.name
                )
