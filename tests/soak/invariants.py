"""What must hold once the system is quiet again (pure checks over a snapshot), and the one that must
hold at every moment: no VF leased to two pods.

The snapshot is gathered from the real parts (the host's lease table over its admin socket, the VM's
records folder, containerd's pod list over CRI, the kernel's netdevs); `check` only compares.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from host_side.api.wire import LeaseInfo
from vm_side.demand import Mode
from vm_side.dpdk_env import file_prefix
from vm_side.pod_record import PodRecord, PodState
from vm_side.release_journal import OwedRelease


@dataclass(frozen=True)
class LivePod:
    """A pod containerd runs, with what the driver asked for it."""

    uid: str
    name: str
    asked_vfs: int  # 0: no demand
    refused: bool  # its annotation must never have given it a VF


@dataclass(frozen=True)
class Snapshot:
    live: Sequence[LivePod]
    leases: Sequence[LeaseInfo]
    records: Sequence[PodRecord]
    owed: Sequence[OwedRelease]
    pod_netns_macs: Mapping[str, frozenset[str]]  # pod uid -> MACs of the netdevs in its netns
    root_macs: frozenset[str]  # MACs of the simulated VFs' netdevs left in the VM's root netns
    dpdk_dirs: frozenset[str]  # pod uids with a per-pod DPDK runtime folder
    hugepage_files: Sequence[str]
    cdi_specs: Sequence[str] = ()  # pod uids with a CDI spec of ours


@dataclass
class Violations:
    found: list[str] = field(default_factory=list)

    def add(self, what: str) -> None:
        self.found.append(what)


def double_leases(leases: Iterable[LeaseInfo]) -> list[str]:
    """VFs held by two pods at once (checked while the churn runs, too)."""
    holders: dict[str, set[str]] = defaultdict(set)
    for lease in leases:
        if lease.pod_uid:
            holders[lease.host_pci].add(lease.pod_uid)
    return [
        f"VF {pci} leased to {sorted(pods)} at once" for pci, pods in sorted(holders.items()) if len(pods) > 1
    ]


def check(snap: Snapshot) -> list[str]:
    v = Violations()
    v.found += double_leases(snap.leases)
    live = {p.uid: p for p in snap.live}
    records = {r.pod_uid: r for r in snap.records}
    held: dict[str, list[LeaseInfo]] = defaultdict(list)
    for lease in snap.leases:
        if lease.pod_uid:
            held[lease.pod_uid].append(lease)
    _check_live(v, snap, live, records, held)
    _check_dead(v, snap, live, records, held)
    if snap.owed:
        v.add(f"release journal not empty: {sorted(o.pod_uid for o in snap.owed)}")
    return v.found


def _check_live(
    v: Violations,
    snap: Snapshot,
    live: Mapping[str, LivePod],
    records: Mapping[str, PodRecord],
    held: Mapping[str, list[LeaseInfo]],
) -> None:
    for pod in live.values():
        leases, rec = held.get(pod.uid, []), records.get(pod.uid)
        if pod.refused and (leases or rec):
            v.add(
                f"pod {pod.name}: refused demand but holds {len(leases)} lease(s), record {rec is not None}"
            )
            continue
        if pod.asked_vfs == 0 or pod.refused:
            if leases or rec:
                v.add(f"pod {pod.name}: asked no VF but holds {len(leases)} lease(s)")
            continue
        if rec is None or rec.state is not PodState.READY:
            v.add(f"pod {pod.name}: runs without a ready record ({rec.state if rec else 'none'})")
            continue
        if len(leases) != pod.asked_vfs:
            v.add(f"pod {pod.name}: asked {pod.asked_vfs} VFs, host leases {len(leases)}")
        on_host = {str(lease.host_pci) for lease in leases}
        in_vm = {str(b.grant.host_pci) for b in rec.vfs}
        if on_host != in_vm:
            v.add(f"pod {pod.name}: host leases {sorted(on_host)} != VM record {sorted(in_vm)}")
        kernel_macs = {b.grant.mac for b in rec.vfs if b.slot.mode is Mode.KERNEL}
        missing = kernel_macs - snap.pod_netns_macs.get(pod.uid, frozenset())
        if missing:
            v.add(f"pod {pod.name}: kernel VFs {sorted(missing)} not in its netns")
        if any(not b.bound for b in rec.vfs):
            v.add(f"pod {pod.name}: a VF is not bound as asked")


def _check_dead(
    v: Violations,
    snap: Snapshot,
    live: Mapping[str, LivePod],
    records: Mapping[str, PodRecord],
    held: Mapping[str, list[LeaseInfo]],
) -> None:
    for uid, leases in held.items():
        if uid not in live:
            v.add(f"dead pod {uid} still holds {len(leases)} lease(s)")
    for uid in records:
        if uid not in live:
            v.add(f"dead pod {uid} still has a record")
    for uid in snap.dpdk_dirs - set(live):
        v.add(f"dead pod {uid} left its DPDK runtime folder")
    prefixes = tuple(file_prefix(uid) for uid in live)
    for name in snap.hugepage_files:
        if not (prefixes and name.startswith(prefixes)):
            v.add(f"hugepage file {name} of a dead pod left")
    for uid in set(snap.cdi_specs) - set(live):
        v.add(f"dead pod {uid} left its CDI spec")
    leased_to_live = {
        lease.mac: lease.pod_uid
        for lease in snap.leases
        if lease.pod_uid in live and lease.pod_uid is not None
    }
    dpdk_macs = {b.grant.mac for r in records.values() for b in r.vfs if b.slot.mode is not Mode.KERNEL}
    warm = {lease.mac for lease in snap.leases if lease.pod_uid is None}
    for mac in snap.root_macs:
        if mac in warm or mac in dpdk_macs:
            continue
        owner = leased_to_live.get(mac)
        v.add(
            f"netdev {mac} left in the VM's root netns ({'of live kernel pod ' + owner if owner else 'no lease'})"
        )
