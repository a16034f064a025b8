"""The ``vpp`` datapath step: hands the pod's VFs to the VM's VPP with a memif into the pod, and records in
its notes what undo needs and what the pod's containers get. Its own module so that a plugin or hook
whose config has no [vpp] table never imports the VPP modules.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING

from contract.crash_points import NO_CRASHES, CrashPoints
from vm_side.adjustment import container_notes
from vm_side.datapath_steps import step_notes, vfs_of
from vm_side.demand import Mode
from vm_side.pod_record import PodRecord
from vm_side.vpp import VppError, VppUnavailable
from vm_side.vpp_pod import VppPodError, VppPodRecord, VppPods, memif_wiring

if TYPE_CHECKING:
    from vm_side.dpdk_health import Health, HealthMonitor

log = logging.getLogger(__name__)

VPP_STEP = "vpp"
NOTE_VPP = "vpp"  # the VppPodRecord, JSON


class VppStep:
    """``vpp`` mode. One lock serializes every use of the VPP connection (the adapter is not thread-safe):
    pod programming, undo, the background reconcile and health polls."""

    name = VPP_STEP

    def __init__(self, pods: VppPods, crash_points: CrashPoints = NO_CRASHES) -> None:
        self.pods = pods
        self._crash = crash_points  # tests: killed at "vpp attach"
        self._lock = threading.Lock()
        # Pods this process programmed and has not undone: they count as live before their record says so.
        self._current: dict[str, VppPodRecord] = {}
        self._failing = False

    def handles(self, mode: Mode) -> bool:
        return mode is Mode.VPP

    def apply(self, rec: PodRecord, deadline: float) -> dict[str, str]:
        vfs = vfs_of(rec, Mode.VPP)
        with self._lock:
            self._fresh_connection(rec.pod_uid)
            done = self.pods.program(rec.pod_uid, vfs, self._crash.reached)
            self._current[rec.pod_uid] = done
        wiring = memif_wiring(self.pods.memif_dir, rec.pod_uid, len(done.ports))
        return {NOTE_VPP: json.dumps(done.to_dict()), **container_notes(wiring.mounts, wiring.env)}

    def undo(self, rec: PodRecord, notes: Mapping[str, str]) -> None:
        with self._lock:
            self._current.pop(rec.pod_uid, None)
            self._fresh_connection(rec.pod_uid)
            # By uid, not by the noted indexes: tags stay right after a VPP restart re-numbered things.
            self.pods.remove(rec.pod_uid)

    def reconcile(self, live: Callable[[], Sequence[PodRecord]]) -> Mapping[str, dict[str, str]]:
        with self._lock:
            known: dict[str, VppPodRecord] = {}
            for rec in live():
                notes = step_notes(rec, VPP_STEP)
                if notes is not None and NOTE_VPP in notes:
                    known[rec.pod_uid] = VppPodRecord.from_dict(json.loads(notes[NOTE_VPP]))
            known.update(self._current)
            try:
                now = {r.pod_uid: r for r in self.pods.reconcile(known.values())}
            except VppError as e:
                if not self._failing:  # once per outage, not every check
                    log.warning("VPP reconcile failed (%s); retrying every check until VPP answers", e)
                self._failing = True
                return {}
            if self._failing:
                log.info("VPP answers again; its objects match the %d pods' records", len(now))
            self._failing = False
            self._current = now
        changed = {}
        for uid, r in now.items():
            if r != known[uid]:
                wiring = memif_wiring(self.pods.memif_dir, uid, len(r.ports))
                changed[uid] = {
                    NOTE_VPP: json.dumps(r.to_dict()),
                    **container_notes(wiring.mounts, wiring.env),
                }
        return changed

    def poll_health(self, monitor: HealthMonitor) -> Health:
        """VPP's buffer pools (one VPP serves every vpp-mode pod of the VM)."""
        with self._lock:
            return monitor.poll_vpp("vpp", self.pods.vpp)

    def _fresh_connection(self, pod_uid: str) -> None:
        """A connection left from before a VPP restart fails on first use: check it, reconnect once."""
        vpp = self.pods.vpp
        try:
            vpp.connect()
            vpp.version()
        except VppUnavailable:
            try:
                vpp.reconnect()
            except VppUnavailable as e:
                raise VppPodError(pod_uid, f"cannot reach VPP: {e}") from e
