"""Plain-text reports of the lab (demo and bench): tables, what a pod sees, latency per phase (pure)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from host_side.api.wire import LeaseInfo
from lab.vm_side.pods import PodView

START_WHOLE = "containerd: RunPodSandbox, whole"
RELEASE_WHOLE = "containerd: Stop+RemovePodSandbox, whole"
Timings = Mapping[str, tuple[int, float]]  # LabHostService.timings(): name -> (count, seconds)

_START_HOST = (
    ("allocate", "host: choose VFs, commit leases"),
    ("netlink", "host: VF settings (emulated PF)"),
    ("libvirt_call", "host: libvirt attach calls"),
    ("event_wait", "host: waits for DEVICE_ADDED"),
    ("call:Attach", "host: Attach RPC, whole"),
)
_RELEASE_HOST = (
    ("libvirt_call", "host: libvirt detach calls"),
    ("event_wait", "host: waits for DEVICE_REMOVED"),
    ("call:Release", "host: Release RPC, whole"),
)


def delta_ms(before: Timings, after: Timings, key: str) -> float | None:
    """Milliseconds spent in `key` between two snapshots; None when it did not run."""
    n, total = after.get(key, (0, 0.0))
    n0, total0 = before.get(key, (0, 0.0))
    return (total - total0) * 1000 if n > n0 else None


def start_phases(
    before: Timings, after: Timings, run_s: float, prepare_ms: float | None
) -> list[tuple[str, float]]:
    """One pod start, phase by phase (ms): the host's own histograms, the plugin's total, containerd's."""
    rows = [(label, ms) for key, label in _START_HOST if (ms := delta_ms(before, after, key)) is not None]
    attach_ms = delta_ms(before, after, "call:Attach")
    if prepare_ms is not None:
        rows.append(("guest: vfhotplug-nri prepare, whole", prepare_ms))
        if attach_ms is not None:
            rows.append(("guest: of it after the host replied (find, bind)", prepare_ms - attach_ms))
    rows.append((START_WHOLE, run_s * 1000))
    return rows


def release_phases(before: Timings, after: Timings, remove_s: float) -> list[tuple[str, float]]:
    rows = [(label, ms) for key, label in _RELEASE_HOST if (ms := delta_ms(before, after, key)) is not None]
    rows.append((RELEASE_WHOLE, remove_s * 1000))
    return rows


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True))]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in rows]
    return "\n".join("    " + line for line in lines)


def lease_table(leases: Sequence[LeaseInfo]) -> str:
    rows = [
        [
            le.lease_id,
            le.state,
            le.pod_name or "-",
            f"{le.pf}/vf{le.vf_index}",
            le.host_pci,
            le.guest_pci or "-",
            le.mac,
        ]
        for le in leases
    ]
    return table(["lease", "state", "pod", "VF", "host PCI", "guest PCI", "MAC"], rows)


def pod_report(view: PodView) -> str:
    by_mac = {le.mac: le for le in view.leases}
    devices = {dev["bdf"]: dev for dev in view.devices}
    rows = []
    for le in view.leases:
        dev = devices.get(le.guest_pci or "", {})
        ifname = next((n for n, mac in view.interfaces.items() if mac == le.mac), "-")
        group = dev.get("iommu_group")
        rows.append(
            [
                ifname,
                le.mac,
                le.guest_pci or "-",
                str(dev.get("driver")),
                "-" if group is None else str(group),
            ]
        )
    other = [f"{n} {mac}" for n, mac in view.interfaces.items() if mac not in by_mac]
    text = table(["in pod", "MAC (= lease)", "guest PCI", "guest driver", "IOMMU group"], rows)
    text += f"\n    other interfaces in the pod: {', '.join(other) or 'none'}"
    text += f"\n    /dev/vfio in the container: {', '.join(view.vfio) or 'none'}"
    return text
