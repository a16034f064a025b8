"""Background data-path health of the plugin's pods: polls each dpdk pod's telemetry socket (and VPP's
buffers when vpp pods exist) through `HealthMonitor`, and writes the result atomically to a small JSON file
in the state folder, which `vfhotplug pods` reads next to the pod records.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from vm_side.datapath_steps import step_notes, telemetry_socket
from vm_side.dpdk_health import Health, HealthMonitor
from vm_side.pod_record import PodState
from vm_side.record_store import RecordStore, write_atomic
from vm_side.vpp_step import VPP_STEP, VppStep

HEALTH_FILE = "health.json"
VPP_KEY = "vpp"  # VPP's own entry: one VPP serves every vpp-mode pod


@dataclass(frozen=True)
class HealthEntry:
    state: str  # healthy / degraded / unhealthy
    reasons: tuple[str, ...]
    notes: tuple[str, ...]
    checked_at: float  # time.time()


def health_entries(health: Mapping[str, Health], now: float) -> dict[str, HealthEntry]:
    return {k: HealthEntry(h.state.name.lower(), h.reasons, h.notes, now) for k, h in sorted(health.items())}


def write_health(path: Path, entries: Mapping[str, HealthEntry]) -> None:
    write_atomic(path, json.dumps({k: vars(e) for k, e in entries.items()}, indent=1, sort_keys=True))


def read_health(path: Path) -> dict[str, HealthEntry]:
    """The last health the plugin wrote; empty when it never did (no dpdk or vpp pods, or not running)."""
    try:
        raw = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as e:
        raise ValueError(f"health file {path} is unreadable ({e}); the plugin rewrites it each poll") from e
    return {
        k: HealthEntry(v["state"], tuple(v["reasons"]), tuple(v["notes"]), float(v["checked_at"]))
        for k, v in raw.items()
    }


@dataclass(eq=False)  # a service: compared by identity
class HealthPoller:
    """One round: poll the ready pods' data paths, drop gone pods' series, rewrite the file."""

    store: RecordStore
    monitor: HealthMonitor
    path: Path
    vpp: VppStep | None = None

    def poll_once(self) -> dict[str, HealthEntry]:
        ready = [r for r in self.store.all() if r.state is PodState.READY]
        seen = set()
        for rec in ready:
            sock = telemetry_socket(rec)
            if sock is not None:
                self.monitor.poll_dpdk(rec.pod_uid, sock)
                seen.add(rec.pod_uid)
        if self.vpp is not None and any(step_notes(r, VPP_STEP) is not None for r in ready):
            self.vpp.poll_health(self.monitor)
            seen.add(VPP_KEY)
        for gone in set(self.monitor.status()) - seen:
            self.monitor.forget(gone)
        entries = health_entries(self.monitor.status(), time.time())
        write_health(self.path, entries)
        return entries
