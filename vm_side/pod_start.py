"""The steps of a pod start after its record exists: host attach, wait for the VFs in the guest, bind them
per mode, write the per-pod files, then the datapath steps; each returns the record to save next."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Protocol

from contract.host_api import HostApi
from vm_side import host_attach
from vm_side.adjustment import DEVINFO_SUBDIR, device_info_files, pod_cdi_spec
from vm_side.binder import Binder, BindError
from vm_side.cdi_store import CdiStore
from vm_side.deadline import check_time
from vm_side.demand import Mode, PodDemand
from vm_side.guest_devices import DeviceFinder, Expected
from vm_side.pod_record import PodRecord, PodState, StepDone
from vm_side.pod_steps import PodStep
from vm_side.record_store import RecordStore, write_atomic
from vm_side.sysfs import GuestSysfs


class StartAction(Protocol):
    def __call__(self, rec: PodRecord, deadline: float, /) -> PodRecord: ...


@dataclass(eq=False)  # a service: compared by identity
class PodStart:
    """The start path's steps; `margin_s` of every deadline is kept back for a rollback."""

    host: HostApi
    store: RecordStore
    sysfs: GuestSysfs
    finder: DeviceFinder
    binder: Binder
    steps: tuple[PodStep, ...]
    run_dir: Path
    margin_s: float
    cdi: CdiStore | None = None

    def plan(self, demand: PodDemand) -> list[tuple[str, StartAction]]:
        """The named steps the demand needs, in order, ending with the record `ready`."""
        plan: list[tuple[str, StartAction]] = [
            ("host attach", self._attach),
            ("wait for VFs in the guest", self._wait),
            ("bind", self.bind),
            ("pod files", self._files),
        ]
        for s in self.steps:
            if any(s.handles(m) for m in demand.modes):
                plan.append((s.name, self._step_action(s)))
        if self.cdi is not None and Mode.DPDK in demand.modes:
            # Last: the spec carries the env and mounts the steps add, and exists before any container.
            plan.append(("cdi spec", self._cdi_spec))
        plan.append(("ready", lambda rec, _d: replace(rec, state=PodState.READY)))
        return plan

    def bind(self, rec: PodRecord, deadline: float) -> PodRecord:
        """Binds every VF not bound yet; kernel VFs wait until the record has a netns (`enter_netns`)."""
        for vf in rec.vfs:
            if vf.bound or (vf.slot.mode is Mode.KERNEL and not rec.netns):
                continue
            check_time(deadline, self.margin_s, f"bind {vf.slot.ifname}")
            noted = self.binder.note_original(vf)
            if noted != vf:
                vf = noted
                rec = rec.with_vf(vf)
                self.store.save(rec)  # the original driver is on disk before it changes
            rec = rec.with_vf(self.binder.bind(rec, vf))
            self.store.save(rec)
        if any(vf.slot.mode is Mode.DPDK for vf in rec.vfs):
            dev = self.sysfs.vfio_container_dev()
            if dev is None:
                raise BindError("the guest has no /dev/vfio/vfio (class/misc/vfio/dev missing); load vfio")
            rec = replace(rec, vfio_container_dev=dev)
        return rec

    def _attach(self, rec: PodRecord, deadline: float) -> PodRecord:
        return replace(rec, vfs=host_attach.attach(self.host, rec, deadline, self.margin_s))

    def _wait(self, rec: PodRecord, deadline: float) -> PodRecord:
        expected = [
            Expected(replace(vf.grant, guest_pci=vf.guest_pci), vf.slot.mode is Mode.KERNEL) for vf in rec.vfs
        ]
        found = self.finder.wait_all(rec.pod_name, expected, deadline - self.margin_s)
        vfs = tuple(
            replace(vf, guest_pci=f.guest_pci, guest_ifname=f.ifname)
            for vf, f in zip(rec.vfs, found, strict=True)
        )
        return replace(rec, vfs=vfs)

    def _files(self, rec: PodRecord, _deadline: float) -> PodRecord:
        pod_dir = self.run_dir / rec.pod_uid
        rec = replace(rec, run_dir=str(pod_dir))
        self.store.save(rec)  # undo knows the folder before it exists
        (pod_dir / DEVINFO_SUBDIR).mkdir(parents=True, exist_ok=True)
        for name, text in device_info_files(rec).items():
            write_atomic(pod_dir / DEVINFO_SUBDIR / name, text, durable=False)  # a run folder, gone at boot
        return rec

    def _cdi_spec(self, rec: PodRecord, _deadline: float) -> PodRecord:
        spec = pod_cdi_spec(replace(rec, state=PodState.READY))  # what the ready pod's containers get
        if spec is not None and self.cdi is not None:
            self.cdi.write(rec.pod_uid, spec)  # teardown removes it whether or not it got this far
        return rec

    def _step_action(self, step: PodStep) -> StartAction:
        def run(rec: PodRecord, deadline: float) -> PodRecord:
            notes = step.apply(rec, deadline - self.margin_s)
            return replace(rec, steps=(*rec.steps, StepDone(step.name, dict(notes))))

        return run
