"""The datapath steps of the pod lifecycle: ``vpp`` mode hands the pod's VFs to the VM's VPP with a memif
into the pod, ``dpdk`` mode gets a per-pod DPDK environment. Both record in their step notes what undo
needs and what the pod's containers get (mounts, env; see `adjustment.container_notes`).
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from contract.crash_points import NO_CRASHES, CrashPoints
from contract.pci import PciAddress
from vm_side.adjustment import container_notes
from vm_side.config import PluginConfig
from vm_side.demand import Mode
from vm_side.dpdk_env import DpdkEnvs, plan_dpdk_env
from vm_side.dpdk_health import Health, HealthMonitor
from vm_side.pod_record import PodRecord
from vm_side.pod_steps import PodStep
from vm_side.vpp import Vpp, VppError, VppUnavailable
from vm_side.vpp_pod import VppPodError, VppPodRecord, VppPods, memif_wiring

log = logging.getLogger(__name__)

VPP_STEP = "vpp"
DPDK_STEP = "dpdk env"
NOTE_VPP = "vpp"  # the VppPodRecord, JSON
NOTE_TELEMETRY = "telemetry_socket"
NOTE_PREFIX = "file_prefix"


def _vfs_of(rec: PodRecord, mode: Mode) -> list[PciAddress]:
    out = []
    for vf in rec.vfs:
        if vf.slot.mode is mode:
            if vf.guest_pci is None:
                raise ValueError(f"VF MAC {vf.grant.mac} of pod {rec.pod_uid} has no guest PCI address")
            out.append(vf.guest_pci)
    return out


def step_notes(rec: PodRecord, step: str) -> Mapping[str, str] | None:
    return next((d.notes for d in rec.steps if d.name == step), None)


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
        vfs = _vfs_of(rec, Mode.VPP)
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


class DpdkEnvStep:
    """``dpdk`` mode: the pod's own file prefix, runtime folder (its /var/run/dpdk) and EAL arguments."""

    name = DPDK_STEP

    def __init__(self, envs: DpdkEnvs) -> None:
        self.envs = envs

    def handles(self, mode: Mode) -> bool:
        return mode is Mode.DPDK

    def apply(self, rec: PodRecord, deadline: float) -> dict[str, str]:
        env = self.envs.prepare(rec.pod_uid, _vfs_of(rec, Mode.DPDK))
        return {
            NOTE_PREFIX: env.file_prefix,
            NOTE_TELEMETRY: str(env.telemetry_socket),
            **container_notes(env.mounts, env.env),
        }

    def undo(self, rec: PodRecord, notes: Mapping[str, str]) -> None:
        # Re-planned from the uid, not taken from the notes: cleanup then cannot be pointed elsewhere.
        self.envs.cleanup(plan_dpdk_env(rec.pod_uid, (), self.envs.runtime_root, self.envs.hugepage_dir))


def telemetry_socket(rec: PodRecord) -> Path | None:
    notes = step_notes(rec, DPDK_STEP)
    return None if notes is None or NOTE_TELEMETRY not in notes else Path(notes[NOTE_TELEMETRY])


def steps_from_config(cfg: PluginConfig, crash_points: CrashPoints = NO_CRASHES) -> list[PodStep]:
    """The DPDK env always; VPP when [vpp] is configured (without it, vpp pods are refused). The NRI
    plugin and the OCI hooks build the same steps from the same config."""
    steps: list[PodStep] = [DpdkEnvStep(DpdkEnvs(cfg.dpdk.runtime_root, cfg.dpdk.hugepages))]
    if cfg.vpp is not None:
        vpp = Vpp(cfg.vpp.socket, api_dirs=cfg.vpp.api_dirs)
        steps.append(VppStep(VppPods(vpp, cfg.vpp.memif_dir), crash_points=crash_points))
    return steps
