"""`vfhotplug pods`: the VM-side view of the plugin's pods, from its records and its health file (read only;
works while the plugin runs, no socket needed)."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from vm_side.health_report import HEALTH_FILE, VPP_KEY, HealthEntry, read_health
from vm_side.pod_record import PodRecord
from vm_side.record_store import list_pod_records

DEFAULT_STATE_DIR = Path("/var/lib/vfhotplug")


def _health_text(h: HealthEntry | None, now: float) -> str:
    if h is None:
        return "-"
    why = f": {'; '.join(h.reasons)}" if h.reasons else ""
    return f"{h.state} ({now - h.checked_at:.0f}s ago){why}"


def render_pods(records: Sequence[PodRecord], health: Mapping[str, HealthEntry], now: float) -> str:
    """One line per pod: name, uid, record state, then one line per VF (mode, pool, guest PCI, MAC)."""
    lines = [f"{'pod':<32} {'uid':<38} {'state':<10} health"]
    for rec in records:
        lines.append(
            f"{rec.pod_name:<32} {rec.pod_uid:<38} {rec.state.value:<10} "
            f"{_health_text(health.get(rec.pod_uid), now)}"
        )
        for vf in rec.vfs:
            lines.append(
                f"  {vf.slot.ifname:<10} {vf.slot.mode.value:<7} {vf.grant.pool:<10} "
                f"{vf.guest_pci or '-'!s:<13} {vf.grant.mac}  lease {vf.grant.lease_id}"
            )
    if VPP_KEY in health:
        lines.append(f"VPP buffers: {_health_text(health[VPP_KEY], now)}")
    return "\n".join(lines)


def show_pods(state_dir: Path) -> int:
    if not state_dir.is_dir():
        print(
            f"vfhotplug: no plugin state in {state_dir}; pass --state-dir (the [pods] state_dir of nri.toml)"
        )
        return 2
    records = list_pod_records(state_dir)  # read-only: a status view never moves or creates files
    try:
        health = read_health(state_dir / HEALTH_FILE)
    except ValueError as e:
        print(f"vfhotplug: {e}")
        health = {}
    print(render_pods(records, health, time.time()))
    return 0
