"""The VM-side pod lifecycle core, shared by the NRI plugin and the OCI hooks.

prepare: demand -> record `preparing` -> host attach -> wait for the VFs -> bind per mode -> per-pod files
-> pluggable steps (VPP, DPDK env) -> record `ready`. Any failure, or the deadline getting near, undoes what
was done in reverse order, releases the host leases and raises `PodError`.
release: record `releasing` -> undo in reverse -> host release (journaled when the host is unreachable).
reconcile: after a restart, finish or undo what records say was half done, then the host's Sync.
"""

from __future__ import annotations

import logging
import shutil
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Protocol, runtime_checkable

from contract.crash_points import NO_CRASHES, CrashPoints
from contract.host_api import GrantedVf, HostApi, HostCallError
from vm_side.adjustment import DEVINFO_SUBDIR, build_adjustment, device_info_files
from vm_side.binder import Binder, BindError
from vm_side.demand import DemandDefaults, DemandError, Mode, PodDemand, VfSlot, parse_demand
from vm_side.guest_devices import DeviceFinder, Expected
from vm_side.netlink import GuestNetlink
from vm_side.pod_record import (
    JOURNAL_SUBDIR,
    PODS_SUBDIR,
    Entry,
    PodRecord,
    PodState,
    RecordError,
    StepDone,
    VfBinding,
)
from vm_side.record_store import RecordStore, write_atomic
from vm_side.release_journal import OwedRelease, ReleaseJournal, ReleaseWorker, settle
from vm_side.runtime_model import ContainerAdjustment
from vm_side.sysfs import GuestSysfs

log = logging.getLogger(__name__)
_ATTACH_TRIES = 3
_ATTACH_RETRY_S = 0.1


class PodError(RuntimeError):
    """A pod could not get (or give back) its VFs; everything done for it was rolled back."""

    def __init__(self, pod_uid: str, pod_name: str, step: str, cause: str) -> None:
        super().__init__(f"pod {pod_name} ({pod_uid}): {step}: {cause}")
        self.pod_uid = pod_uid
        self.pod_name = pod_name
        self.step = step
        self.cause = cause


class _DeadlineNear(Exception):
    pass


class PodStep(Protocol):
    """A datapath step run after binding (e.g. hand VFs to VPP, prepare the DPDK env); undone in reverse.

    `apply` returns the notes its `undo` needs (persisted in the pod record); `undo` must be idempotent.
    """

    @property
    def name(self) -> str: ...

    def handles(self, mode: Mode) -> bool: ...

    def apply(self, rec: PodRecord, deadline: float) -> dict[str, str]: ...

    def undo(self, rec: PodRecord, notes: Mapping[str, str]) -> None: ...


@runtime_checkable
class ReconcilingStep(PodStep, Protocol):
    """A step whose objects live in an outside system (VPP) that can lose or keep them behind our back.

    `reconcile` matches that system to the pods `live()` lists (called under the step's own lock, so no
    apply or undo interleaves) and returns new notes for pods whose objects it re-created.
    """

    def reconcile(self, live: Callable[[], Sequence[PodRecord]]) -> Mapping[str, dict[str, str]]: ...


@dataclass(frozen=True)
class LifecycleConfig:
    defaults: DemandDefaults
    run_dir: Path  # per-pod folders: device-info files, DPDK runtime folder
    margin_s: float = 0.4  # time kept back from the runtime's deadline for a rollback
    host_timeout_s: float = 10.0  # release and sync outside a runtime deadline


@dataclass(frozen=True)
class ReconcileReport:
    kept: tuple[str, ...] = ()
    undone: tuple[str, ...] = ()  # half-prepared or vanished pods torn down
    owed: int = 0  # releases still in the journal
    synced: bool = False


@dataclass
class _Locks:
    guard: threading.Lock = field(default_factory=threading.Lock)
    pods: dict[str, threading.Lock] = field(default_factory=dict)
    users: dict[str, int] = field(default_factory=dict)  # holders and waiters per pod lock
    busy: set[str] = field(default_factory=set)


class PodLifecycle:
    def __init__(
        self,
        host: HostApi,
        sysfs: GuestSysfs,
        netlink: GuestNetlink,
        records_dir: Path,
        config: LifecycleConfig,
        steps: Sequence[PodStep] = (),
        poll_interval_s: float = 0.1,
        crash_points: CrashPoints = NO_CRASHES,
    ) -> None:
        self.host = host
        self._crash = crash_points  # tests hand in an armed one to kill us right after a step is on disk
        self.config = config
        self.store = RecordStore(records_dir / PODS_SUBDIR)
        self.journal = ReleaseJournal(records_dir / JOURNAL_SUBDIR)
        self._locks = _Locks()
        self._background: list[threading.Thread] = []
        self.worker = ReleaseWorker(self.journal, host, timeout_s=config.host_timeout_s, pod_guard=self._pod)
        self._sysfs = sysfs
        self._finder = DeviceFinder(sysfs, netlink, poll_interval_s)
        self._binder = Binder(sysfs, netlink)
        self._steps = tuple(steps)

    @property
    def steps(self) -> tuple[PodStep, ...]:
        return self._steps

    # -- entry points ---------------------------------------------------------------------------------
    def prepare(
        self,
        pod_uid: str,
        pod_name: str,
        netns_path: str,
        annotations: Mapping[str, str],
        deadline: float,
        *,
        netns_later: bool = False,
        entry: Entry = Entry.NRI,
    ) -> PodRecord | None:
        """Give the pod its VFs; None when it asks for none. `deadline` is a time.monotonic() value.

        With `netns_later` (OCI hooks: the netns does not exist yet) kernel-mode VFs stay in the guest's
        netns until `enter_netns`. `entry` names who manages the pod (see `reconcile`).

        Raises:
            PodError: the demand is bad or a step failed; nothing is left allocated (a host release that
                could not be confirmed is journaled).
        """
        try:
            demand = parse_demand(annotations, self.config.defaults)
        except DemandError as e:
            raise PodError(pod_uid, pod_name, "bad demand", str(e)) from e
        if demand is None:
            return None
        started = time.monotonic()
        self._check_supported(pod_uid, pod_name, netns_path or netns_later, demand)
        with self._pod(pod_uid):
            old = self.store.load(pod_uid)
            if old is not None and old.state is PodState.READY and old.netns == netns_path:
                return old
            if old is not None:
                log.warning("pod %s (%s): leftover %s record, undoing it first", pod_name, pod_uid, old.state)
                self._teardown(old, self._budget(deadline))
            owed = self.journal.get(pod_uid)
            if owed is not None:
                try:
                    settle(self.host, owed, max(deadline - time.monotonic() - self.config.margin_s, 0.01))
                except HostCallError as e:
                    raise PodError(pod_uid, pod_name, "earlier release still owed", str(e)) from e
                self.journal.remove(pod_uid)
            attempt = self.store.next_attempt(pod_uid)
            rec = PodRecord(
                pod_uid=pod_uid,
                pod_name=pod_name,
                netns=netns_path,
                state=PodState.PREPARING,
                attempt=attempt,
                # The stamp keeps ids unique when a pod uid comes back after its counter was forgotten.
                request_id=f"{pod_uid}/{attempt}/{time.time_ns():x}",
                slots=demand.slots,
                entry=entry,
            )
            self.store.save(rec)
            self._crash.reached("preparing")
            step = "host attach"
            phases = [f"record {(time.monotonic() - started) * 1000:.1f}"]  # per-phase ms, for the log
            try:
                for step, action in self._plan(demand):
                    self._check_time(deadline, step)
                    began = time.monotonic()
                    rec = action(rec, deadline)
                    self.store.save(rec)
                    phases.append(f"{step} {(time.monotonic() - began) * 1000:.1f}")
                    self._crash.reached(step)
            except Exception as e:  # any failure, bugs included, must roll back
                log.warning("pod %s (%s): %s failed (%s); rolling back", pod_name, pod_uid, step, e)
                if deadline - time.monotonic() < self.config.margin_s:
                    # Undoing now would overrun the runtime's deadline, and containerd drops a plugin
                    # that answers late; answer now and undo in the background (the record says so).
                    self._teardown_later(rec)
                    raise PodError(pod_uid, pod_name, step, f"{e}; rolling back in the background") from e
                self._teardown(rec, self._budget(deadline, rollback=True))
                raise PodError(pod_uid, pod_name, step, f"{e}; rolled back") from e
            log.info(
                "pod %s (%s): ready with %d VFs in %.0f ms, %.0f ms before the deadline (ms: %s)",
                pod_name,
                pod_uid,
                len(rec.vfs),
                (time.monotonic() - started) * 1000,
                (deadline - time.monotonic()) * 1000,
                ", ".join(phases),
            )
            return rec

    def enter_netns(self, pod_uid: str, netns_path: str, deadline: float) -> PodRecord:
        """Move a prepared pod's kernel-mode VFs into its netns, once that exists (OCI createRuntime).

        Raises:
            PodError: no ready record, another netns already holds the VFs, or a move failed; in the last
                case everything for the pod is undone and released.
        """
        with self._pod(pod_uid):
            rec = self.store.load(pod_uid)
            if rec is None or rec.state is not PodState.READY:
                raise PodError(pod_uid, "?", "enter netns", "the pod has no ready VFs; prepare it first")
            if rec.netns and rec.netns != netns_path:
                raise PodError(pod_uid, rec.pod_name, "enter netns", f"its VFs are already in {rec.netns}")
            rec = replace(rec, netns=netns_path)
            self.store.save(rec)
            try:
                self._check_time(deadline, "enter netns")
                rec = self._bind(rec, deadline)
                self.store.save(rec)
            except Exception as e:  # any failure, bugs included, must roll back
                log.warning("pod %s (%s): enter netns failed (%s); rolling back", rec.pod_name, pod_uid, e)
                self._teardown(rec, self._budget(deadline, rollback=True))
                raise PodError(pod_uid, rec.pod_name, "enter netns", f"{e}; rolled back") from e
            return rec

    def adjustment(self, pod_uid: str) -> ContainerAdjustment | None:
        """What every container of the pod gets; None for pods without (ready) VFs. No host call."""
        try:
            rec = self.store.load(pod_uid)
        except RecordError as e:
            log.error("%s", e)
            return None
        if rec is None or rec.state is not PodState.READY:
            return None
        return build_adjustment(rec)

    def release(self, pod_uid: str, deadline: float | None = None) -> None:
        """Undo everything for the pod and give its VFs back. Idempotent (Stop then Remove, repeats);
        when the host cannot be reached, or does not confirm before `deadline` (the runtime's, so the
        plugin is never cut off), the release is journaled and retried in the background."""
        with self._pod(pod_uid):
            rec = self.store.load(pod_uid)
            if rec is None:
                return
            self._teardown(rec, self._budget(deadline))
            self.store.forget(pod_uid)

    def reconcile(self, live_pods: Mapping[str, str], deadline: float | None = None) -> ReconcileReport:
        """After a restart: `live_pods` maps the runtime's pod uids to their netns paths. With a deadline
        (NRI Synchronize) host calls are cut short and what they leave owed goes to the journal.

        Only NRI pods are judged against `live_pods`: containers of the OCI hooks share the records folder
        but not containerd's list, so they are left alone and their VFs kept in the host's Sync."""
        kept, undone, hooks = [], [], []
        for rec in self.store.all():
            if rec.entry is not Entry.NRI:
                hooks.append(rec.pod_uid)
                continue
            with self._pod(rec.pod_uid):
                if rec.state is PodState.READY and rec.pod_uid in live_pods:
                    kept.append(rec.pod_uid)
                    continue
                log.warning(
                    "pod %s (%s): %s record at reconcile, undoing it", rec.pod_name, rec.pod_uid, rec.state
                )
                self._teardown(rec, self._budget(deadline))
                undone.append(rec.pod_uid)
                if rec.pod_uid not in live_pods:
                    self.store.forget(rec.pod_uid)
        for uid in self.store.attempt_uids():
            if uid not in live_pods and self.store.load(uid) is None:
                self.store.forget(uid)
        owed = self.worker.run_once(force=True)  # an explicit resync: no backoff
        with self._locks.guard:
            keep = sorted(set(kept) | set(hooks) | self._locks.busy)
        try:
            self.host.sync(keep, self._budget(deadline) or self.config.host_timeout_s)
            synced = True
        except HostCallError as e:
            log.warning("host sync failed (%s); the next reconcile retries it", e)
            synced = False
        self.reconcile_steps()
        return ReconcileReport(tuple(kept), tuple(undone), owed, synced)

    def reconcile_steps(self) -> None:
        """Let steps with outside state (VPP) match it to the pods in flight or ready; save new notes.
        Safe to call any time (a background check does, to catch a VPP restart)."""
        for step in self._steps:
            if not isinstance(step, ReconcilingStep):
                continue
            try:
                changed = step.reconcile(self._live_records)
            except Exception:  # the outside system is down or broken: the next round retries
                log.exception("reconcile of step %s failed; retrying later", step.name)
                continue
            for uid, notes in changed.items():
                with self._pod(uid):
                    rec = self.store.load(uid)
                    if rec is None or rec.state is PodState.RELEASING:
                        continue
                    steps = tuple(StepDone(d.name, notes) if d.name == step.name else d for d in rec.steps)
                    self.store.save(replace(rec, steps=steps))

    def _live_records(self) -> list[PodRecord]:
        return [r for r in self.store.all() if r.state in (PodState.READY, PodState.PREPARING)]

    # -- prepare steps --------------------------------------------------------------------------------
    def _plan(self, demand: PodDemand) -> list[tuple[str, _Action]]:
        plan: list[tuple[str, _Action]] = [
            ("host attach", self._attach),
            ("wait for VFs in the guest", self._wait),
            ("bind", self._bind),
            ("pod files", self._files),
        ]
        for s in self._steps:
            if any(s.handles(m) for m in demand.modes):
                plan.append((s.name, self._step_action(s)))
        plan.append(("ready", lambda rec, _d: replace(rec, state=PodState.READY)))
        return plan

    def _attach(self, rec: PodRecord, deadline: float) -> PodRecord:
        demand = PodDemand(rec.slots)
        for attempt in range(1, _ATTACH_TRIES + 1):
            timeout = deadline - time.monotonic() - self.config.margin_s
            try:
                grants = self.host.attach(
                    rec.pod_uid, rec.pod_name, demand.host_requests(), rec.request_id, timeout
                )
                break
            except HostCallError as e:
                # A dropped connection ("Stream removed") says nothing of the call's fate; the request id
                # makes a retry return the same leases, so try again a few times while time allows.
                left = deadline - time.monotonic() - self.config.margin_s
                if not e.retryable or attempt == _ATTACH_TRIES or left < 2 * _ATTACH_RETRY_S:
                    raise
                log.warning(
                    "pod %s (%s): host attach try %d: %s; retrying", rec.pod_name, rec.pod_uid, attempt, e
                )
                time.sleep(_ATTACH_RETRY_S)
        return replace(rec, vfs=_match_grants(rec, grants))

    def _wait(self, rec: PodRecord, deadline: float) -> PodRecord:
        expected = [
            Expected(replace(vf.grant, guest_pci=vf.guest_pci), vf.slot.mode is Mode.KERNEL) for vf in rec.vfs
        ]
        found = self._finder.wait_all(rec.pod_name, expected, deadline - self.config.margin_s)
        vfs = tuple(
            replace(vf, guest_pci=f.guest_pci, guest_ifname=f.ifname)
            for vf, f in zip(rec.vfs, found, strict=True)
        )
        return replace(rec, vfs=vfs)

    def _bind(self, rec: PodRecord, deadline: float) -> PodRecord:
        for vf in rec.vfs:
            if vf.bound or (vf.slot.mode is Mode.KERNEL and not rec.netns):
                continue  # kernel VFs without a netns yet wait for enter_netns
            self._check_time(deadline, f"bind {vf.slot.ifname}")
            noted = self._binder.note_original(vf)
            if noted != vf:
                vf = noted
                rec = rec.with_vf(vf)
                self.store.save(rec)  # the original driver is on disk before it changes
            rec = rec.with_vf(self._binder.bind(rec, vf))
            self.store.save(rec)
        if any(vf.slot.mode is Mode.DPDK for vf in rec.vfs):
            dev = self._sysfs.vfio_container_dev()
            if dev is None:
                raise BindError("the guest has no /dev/vfio/vfio (class/misc/vfio/dev missing); load vfio")
            rec = replace(rec, vfio_container_dev=dev)
        return rec

    def _files(self, rec: PodRecord, _deadline: float) -> PodRecord:
        pod_dir = self.config.run_dir / rec.pod_uid
        rec = replace(rec, run_dir=str(pod_dir))
        self.store.save(rec)  # undo knows the folder before it exists
        (pod_dir / DEVINFO_SUBDIR).mkdir(parents=True, exist_ok=True)
        for name, text in device_info_files(rec).items():
            write_atomic(pod_dir / DEVINFO_SUBDIR / name, text, durable=False)  # a run folder, gone at boot
        return rec

    def _step_action(self, step: PodStep) -> _Action:
        def run(rec: PodRecord, deadline: float) -> PodRecord:
            notes = step.apply(rec, deadline - self.config.margin_s)
            return replace(rec, steps=(*rec.steps, StepDone(step.name, dict(notes))))

        return run

    # -- undo -----------------------------------------------------------------------------------------
    def _teardown(self, rec: PodRecord, release_timeout_s: float | None = None) -> None:
        """Undo in reverse, then release on the host; journal the release if the host does not confirm."""
        rec = replace(rec, state=PodState.RELEASING)
        self.store.save(rec)
        self._crash.reached("releasing")
        by_name = {s.name: s for s in self._steps}
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
        if rec.run_dir is not None:
            shutil.rmtree(rec.run_dir, ignore_errors=True)
        for vf in reversed(rec.vfs):
            try:
                rec = rec.with_vf(self._binder.unbind(rec, vf))
            except BindError as e:
                # The host's detach takes the VF out of the guest wherever it is; nothing leaks.
                log.error("pod %s (%s): %s; the host detach will remove it", rec.pod_name, rec.pod_uid, e)
        self._crash.reached("unbound")
        owed = OwedRelease(rec.pod_uid, rec.pod_name, f"{rec.request_id}/release", time.time())
        try:
            settle(self.host, owed, release_timeout_s or self.config.host_timeout_s)
            self._crash.reached("host release")
        except HostCallError as e:
            log.warning(
                "pod %s (%s): host release not confirmed (%s); journaled", rec.pod_name, rec.pod_uid, e
            )
            self.journal.add(owed)
            self.worker.kick()
        self.store.remove(rec.pod_uid)

    # -- helpers --------------------------------------------------------------------------------------
    def _check_supported(self, pod_uid: str, pod_name: str, has_netns: str | bool, demand: PodDemand) -> None:
        for mode in demand.modes:
            if mode is Mode.VPP and not any(s.handles(mode) for s in self._steps):
                raise PodError(
                    pod_uid,
                    pod_name,
                    "bad demand",
                    "mode vpp needs VPP, and no VPP is configured: add a [vpp] table to the plugin config",
                )
        if Mode.KERNEL in demand.modes and not has_netns:
            raise PodError(pod_uid, pod_name, "bad demand", "kernel mode needs a pod network namespace")

    def _teardown_later(self, rec: PodRecord) -> None:
        self.store.save(replace(rec, state=PodState.RELEASING))

        def undo() -> None:
            with self._pod(rec.pod_uid):
                left = self.store.load(rec.pod_uid)
                if left is not None and left.state is PodState.RELEASING:
                    self._teardown(left)

        t = threading.Thread(target=undo, name=f"rollback-{rec.pod_uid}", daemon=True)
        with self._locks.guard:
            self._background = [b for b in self._background if b.is_alive()] + [t]
        t.start()

    def wait_background(self, timeout_s: float) -> bool:
        """Waits for rollbacks moved to the background; True when none is left running."""
        deadline = time.monotonic() + timeout_s
        with self._locks.guard:
            pending = list(self._background)
        for t in pending:
            t.join(max(deadline - time.monotonic(), 0))
        return not any(t.is_alive() for t in pending)

    def _budget(self, deadline: float | None, rollback: bool = False) -> float | None:
        """Time a host call may take before `deadline` (None: no deadline, the configured timeout).
        A rollback may use the margin: that is what it was kept for."""
        if deadline is None:
            return None
        return max(deadline - time.monotonic() - (0 if rollback else self.config.margin_s), 0.05)

    def _check_time(self, deadline: float, what: str) -> None:
        left = deadline - time.monotonic()
        if left < self.config.margin_s:
            raise _DeadlineNear(
                f"{left:.2f}s left before {what}, under the {self.config.margin_s}s rollback margin"
            )

    @contextmanager
    def _pod(self, pod_uid: str) -> Iterator[None]:
        """Serialize work on one pod; `busy` names pods mid-flight so a Sync never frees their leases."""
        locks = self._locks
        with locks.guard:
            lock = locks.pods.setdefault(pod_uid, threading.Lock())
            locks.users[pod_uid] = locks.users.get(pod_uid, 0) + 1
        try:
            with lock:
                with locks.guard:
                    locks.busy.add(pod_uid)
                try:
                    yield
                finally:
                    with locks.guard:
                        locks.busy.discard(pod_uid)
        finally:
            with locks.guard:
                locks.users[pod_uid] -= 1
                if not locks.users[pod_uid]:  # last user: drop the lock, the map stays bounded
                    del locks.users[pod_uid], locks.pods[pod_uid]


class _Action(Protocol):
    def __call__(self, rec: PodRecord, deadline: float, /) -> PodRecord: ...


def _match_grants(rec: PodRecord, grants: Sequence[GrantedVf]) -> tuple[VfBinding, ...]:
    """Pair the host's grants with the demand's slots, in request order.

    Raises:
        ValueError: the host answered with a different number of VFs than asked for a request.
    """
    by_request: dict[int, list[GrantedVf]] = {}
    for g in grants:
        by_request.setdefault(g.request_index, []).append(g)
    out: list[VfBinding] = []
    slot_lists: dict[int, list[VfSlot]] = {}
    for s in rec.slots:
        slot_lists.setdefault(s.request_index, []).append(s)
    for line, (index, slots) in enumerate(sorted(slot_lists.items())):
        got = by_request.get(line, [])
        if len(got) != len(slots):
            raise ValueError(f"host granted {len(got)} VFs for request {index}, asked {len(slots)}")
        out.extend(VfBinding(slot=s, grant=g, guest_pci=g.guest_pci) for s, g in zip(slots, got, strict=True))
    return tuple(out)
