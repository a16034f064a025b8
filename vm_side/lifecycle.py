"""The VM-side pod lifecycle core, shared by the NRI plugin and the OCI hooks.

prepare: demand -> record `preparing` -> the start path (`pod_start`: host attach, wait for the VFs, bind per
mode, per-pod files, pluggable steps such as VPP and DPDK env) -> record `ready`. Any failure, or the deadline
getting near, undoes what was done in reverse order (`pod_teardown`), releases the host leases and raises
`PodError`.
release: record `releasing` -> undo in reverse -> host release (journaled when the host is unreachable).
reconcile: after a restart, finish or undo what records say was half done, then the host's Sync.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from contract.crash_points import NO_CRASHES, CrashPoints
from contract.host_api import HostApi, HostCallError
from vm_side.adjustment import adjustment_for
from vm_side.binder import Binder
from vm_side.cdi_store import CdiStore
from vm_side.deadline import check_time, host_budget
from vm_side.demand import DemandDefaults, DemandError, Mode, PodDemand, parse_demand
from vm_side.guest_devices import DeviceFinder
from vm_side.netlink import GuestNetlink, LinkError
from vm_side.pod_locks import PodLocks
from vm_side.pod_record import JOURNAL_SUBDIR, PODS_SUBDIR, Entry, PodRecord, PodState, RecordError, StepDone
from vm_side.pod_start import PodStart
from vm_side.pod_steps import PodStep, ReconcilingStep
from vm_side.pod_teardown import PodTeardown
from vm_side.record_store import RecordStore
from vm_side.release_journal import ReleaseJournal, ReleaseWorker, settle
from vm_side.runtime_model import ContainerAdjustment, RuntimeInfo
from vm_side.sysfs import GuestSysfs

log = logging.getLogger(__name__)


class PodError(RuntimeError):
    """A pod could not get (or give back) its VFs; everything done for it was rolled back."""

    def __init__(self, pod_uid: str, pod_name: str, step: str, cause: str) -> None:
        super().__init__(f"pod {pod_name} ({pod_uid}): {step}: {cause}")
        self.pod_uid = pod_uid
        self.pod_name = pod_name
        self.step = step
        self.cause = cause


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
        cdi: CdiStore | None = None,
    ) -> None:
        """`cdi`: where dpdk pods' CDI specs go; None writes none (tests that do not look at them)."""
        self.host = host
        self._crash = crash_points  # tests hand in an armed one to kill us right after a step is on disk
        self.config = config
        self.store = RecordStore(records_dir / PODS_SUBDIR)
        self.journal = ReleaseJournal(records_dir / JOURNAL_SUBDIR)
        self._locks = PodLocks()
        self.worker = ReleaseWorker(
            self.journal, host, timeout_s=config.host_timeout_s, pod_guard=self._locks.hold
        )
        self._steps = tuple(steps)
        self._netlink = netlink
        binder = Binder(sysfs, netlink)
        finder = DeviceFinder(sysfs, netlink, poll_interval_s)
        self._cdi = cdi
        self._start = PodStart(
            host, self.store, sysfs, finder, binder, self._steps, config.run_dir, config.margin_s, cdi
        )
        self._teardown = PodTeardown(
            host,
            self.store,
            self.journal,
            self.worker,
            binder,
            self._steps,
            self._locks,
            crash_points,
            config.host_timeout_s,
            cdi,
        )

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
        with self._locks.hold(pod_uid):
            old = self.store.load(pod_uid)
            if old is not None and old.state is PodState.READY and old.netns == netns_path:
                return old
            self._clear_leftovers(old, pod_uid, pod_name, deadline)
            demand = self._check_names_free(pod_uid, pod_name, netns_path, annotations, demand)
            rec = self._new_record(pod_uid, pod_name, netns_path, demand, entry)
            phases = [f"record {(time.monotonic() - started) * 1000:.1f}"]  # per-phase ms, for the log
            rec = self._run_start(rec, demand, deadline, phases)
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
        with self._locks.hold(pod_uid):
            rec = self.store.load(pod_uid)
            if rec is None or rec.state is not PodState.READY:
                raise PodError(pod_uid, "?", "enter netns", "the pod has no ready VFs; prepare it first")
            if rec.netns and rec.netns != netns_path:
                raise PodError(pod_uid, rec.pod_name, "enter netns", f"its VFs are already in {rec.netns}")
            rec = replace(rec, netns=netns_path)
            self.store.save(rec)
            try:
                check_time(deadline, self.config.margin_s, "enter netns")
                rec = self._start.bind(rec, deadline)
                self.store.save(rec)
            except Exception as e:  # any failure, bugs included, must roll back
                log.warning("pod %s (%s): enter netns failed (%s); rolling back", rec.pod_name, pod_uid, e)
                self._teardown.teardown(rec, self._budget(deadline, rollback=True))
                raise PodError(pod_uid, rec.pod_name, "enter netns", f"{e}; rolled back") from e
            return rec

    def adjustment(self, pod_uid: str, runtime: RuntimeInfo | None = None) -> ContainerAdjustment | None:
        """What every container of the pod gets from `runtime` (None: the OCI hooks, which write the
        runtime config themselves); None for pods without (ready) VFs. No host call."""
        try:
            rec = self.store.load(pod_uid)
        except RecordError as e:
            log.error("%s", e)
            return None
        if rec is None or rec.state is not PodState.READY:
            return None
        return adjustment_for(rec, runtime)

    def release(self, pod_uid: str, deadline: float | None = None) -> None:
        """Undo everything for the pod and give its VFs back. Idempotent (Stop then Remove, repeats);
        when the host cannot be reached, or does not confirm before `deadline` (the runtime's, so the
        plugin is never cut off), the release is journaled and retried in the background."""
        with self._locks.hold(pod_uid):
            rec = self.store.load(pod_uid)
            if rec is None:
                return
            self._teardown.teardown(rec, self._budget(deadline))
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
            with self._locks.hold(rec.pod_uid):
                if rec.state is PodState.READY and rec.pod_uid in live_pods:
                    kept.append(rec.pod_uid)
                    continue
                log.warning(
                    "pod %s (%s): %s record at reconcile, undoing it", rec.pod_name, rec.pod_uid, rec.state
                )
                self._teardown.teardown(rec, self._budget(deadline))
                undone.append(rec.pod_uid)
                if rec.pod_uid not in live_pods:
                    self.store.forget(rec.pod_uid)
        for uid in self.store.attempt_uids():
            if uid not in live_pods and self.store.load(uid) is None:
                self.store.forget(uid)
        self._reconcile_cdi()
        owed = self.worker.run_once(force=True)  # an explicit resync: no backoff
        keep = sorted(set(kept) | set(hooks) | self._locks.busy())
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
                with self._locks.hold(uid):
                    rec = self.store.load(uid)
                    if rec is None or rec.state is PodState.RELEASING:
                        continue
                    steps = tuple(StepDone(d.name, notes) if d.name == step.name else d for d in rec.steps)
                    self.store.save(replace(rec, steps=steps))

    def wait_background(self, timeout_s: float) -> bool:
        """Waits for rollbacks moved to the background; True when none is left running."""
        return self._teardown.wait_background(timeout_s)

    # -- prepare, in parts ----------------------------------------------------------------------------
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

    def _clear_leftovers(self, old: PodRecord | None, pod_uid: str, pod_name: str, deadline: float) -> None:
        """Undo an earlier attempt's record and settle a release still owed, so the new attempt starts clean."""
        if old is not None:
            log.warning("pod %s (%s): leftover %s record, undoing it first", pod_name, pod_uid, old.state)
            self._teardown.teardown(old, self._budget(deadline))
        owed = self.journal.get(pod_uid)
        if owed is not None:
            try:
                settle(self.host, owed, max(deadline - time.monotonic() - self.config.margin_s, 0.01))
            except HostCallError as e:
                raise PodError(pod_uid, pod_name, "earlier release still owed", str(e)) from e
            self.journal.remove(pod_uid)

    def _check_names_free(
        self, pod_uid: str, pod_name: str, netns: str, annotations: Mapping[str, str], demand: PodDemand
    ) -> PodDemand:
        """The demand again with the names the pod's netns already has (the CNI's eth0): a kernel-mode VF
        renamed onto one would fail after the host call, so that is refused here, before any lease.
        Called after a leftover record is undone, so our own VFs are no longer in the netns."""
        if not netns or Mode.KERNEL not in demand.modes:
            return demand
        try:
            taken = self._netlink.link_names(netns)
        except LinkError as e:
            raise PodError(pod_uid, pod_name, "pod netns", f"{e}; is the pod still running?") from e
        try:
            again = parse_demand(annotations, self.config.defaults, taken)
        except DemandError as e:
            raise PodError(pod_uid, pod_name, "bad demand", str(e)) from e
        assert again is not None  # the same annotation parsed before
        return again

    def _new_record(
        self, pod_uid: str, pod_name: str, netns_path: str, demand: PodDemand, entry: Entry
    ) -> PodRecord:
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
        return rec

    def _run_start(self, rec: PodRecord, demand: PodDemand, deadline: float, phases: list[str]) -> PodRecord:
        """Runs the start path, saving the record after each step (each step's ms goes to `phases`); on any
        failure rolls back and raises."""
        step = "host attach"
        try:
            for step, action in self._start.plan(demand):
                check_time(deadline, self.config.margin_s, step)
                began = time.monotonic()
                rec = action(rec, deadline)
                self.store.save(rec)
                phases.append(f"{step} {(time.monotonic() - began) * 1000:.1f}")
                self._crash.reached(step)
        except Exception as e:  # any failure, bugs included, must roll back
            log.warning("pod %s (%s): %s failed (%s); rolling back", rec.pod_name, rec.pod_uid, step, e)
            if deadline - time.monotonic() < self.config.margin_s:
                # Undoing now would overrun the runtime's deadline, and containerd drops a plugin
                # that answers late; answer now and undo in the background (the record says so).
                self._teardown.teardown_later(rec)
                raise PodError(rec.pod_uid, rec.pod_name, step, f"{e}; rolling back in the background") from e
            self._teardown.teardown(rec, self._budget(deadline, rollback=True))
            raise PodError(rec.pod_uid, rec.pod_name, step, f"{e}; rolled back") from e
        return rec

    def _reconcile_cdi(self) -> None:
        """Removes CDI specs no record accounts for (a crash between a teardown's steps, a wiped folder)."""
        if self._cdi is None:
            return
        try:
            self._cdi.reconcile({r.pod_uid for r in self.store.all()})
        except OSError as e:  # specs are not worth failing a reconcile for; the next one retries
            log.error("cannot reconcile CDI specs in %s (%s)", self._cdi.dir, e)

    def _budget(self, deadline: float | None, rollback: bool = False) -> float | None:
        return host_budget(deadline, self.config.margin_s, rollback)

    def _live_records(self) -> list[PodRecord]:
        return [r for r in self.store.all() if r.state in (PodState.READY, PodState.PREPARING)]
