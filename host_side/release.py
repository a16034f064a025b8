"""The release path: Release (a pod's leases or named lease ids) and Sync (leases of pods gone from a VM).

A VF whose detach outcome is unknown is quarantined, never freed; a retried Release gets the first answer.
"""

from __future__ import annotations

import json
import logging
import secrets
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass

from contract.errors import InvalidRequest, PermissionDenied, PreconditionFailed
from host_side.api.lease_state import LeaseState
from host_side.config import Timeouts, VmConfig
from host_side.leases import Lease, LeaseStore
from host_side.plugging import Plugger
from host_side.replay import RequestGate, answer_of

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ReleaseResult:
    released: tuple[str, ...]
    quarantined: tuple[str, ...]


class Releaser:
    def __init__(self, timeouts: Timeouts, store: LeaseStore, plugger: Plugger, gate: RequestGate) -> None:
        self._timeouts = timeouts
        self._store = store
        self._plugger = plugger
        self._gate = gate

    def release(
        self,
        vm: VmConfig | None,
        pod_uid: str | None,
        lease_ids: Sequence[str],
        request_id: str,
        deadline: float,
        *,
        admin_vm: str | None = None,
    ) -> ReleaseResult:
        """Releases a pod's leases or the given lease ids. `vm` None: the admin, who may name any lease."""
        if bool(pod_uid) == bool(lease_ids):
            raise InvalidRequest("give either a pod uid or lease ids to release")
        owner = vm.identity if vm is not None else admin_vm
        if pod_uid and owner is None:
            raise InvalidRequest("the admin releasing by pod uid must name the VM too")
        with self._gate.once(owner or "(admin)", request_id or secrets.token_hex(8), deadline):
            if request_id and vm is not None:
                stored = answer_of(self._store, vm.identity, request_id, "release")
                if stored is not None:
                    d = json.loads(stored[1])
                    return ReleaseResult(tuple(d["released"]), tuple(d["quarantined"]))
            targets, gone = self._targets(vm, owner, pod_uid, lease_ids)
            busy = [le.lease_id for le in targets if le.state in (LeaseState.RESERVED, LeaseState.ATTACHING)]
            if busy and vm is not None:
                raise PreconditionFailed(
                    f"lease(s) {', '.join(busy)} are still being attached; retry shortly"
                )
            released, quarantined = list(gone), list[str]()
            for le in targets:
                (released if self._undo(le, deadline) else quarantined).append(le.lease_id)
                log.info(
                    "release of lease %s (VF %s, pod %s, VM %s): %s",
                    le.lease_id,
                    le.vf.pci,
                    le.pod_uid,
                    le.vm,
                    LeaseState.FREE if le.lease_id in released else LeaseState.QUARANTINED,
                )
            result = ReleaseResult(tuple(released), tuple(quarantined))
            if request_id and vm is not None:
                self._store.save_answer(vm.identity, request_id, "release", json.dumps(asdict(result)))
            return result

    def _targets(
        self, vm: VmConfig | None, owner: str | None, pod_uid: str | None, lease_ids: Sequence[str]
    ) -> tuple[list[Lease], list[str]]:
        """The leases to release, and the named lease ids that are released already."""
        if pod_uid:
            return self._store.leases(vm=owner, pod_uid=pod_uid), []
        targets: list[Lease] = []
        gone: list[str] = []
        for lid in lease_ids:
            le = self._store.get(lid)
            if le is None or le.state is LeaseState.FREE:
                gone.append(lid)  # released before (a retry after a crash)
            elif vm is not None and le.vm != vm.identity:
                raise PermissionDenied(f"lease {lid} is not VM {vm.identity}'s; release only your own")
            else:
                targets.append(le)
        return targets, gone

    def _undo(self, le: Lease, deadline: float) -> bool:
        """Detaches one lease's VF within the call's deadline; False when it was quarantined."""
        timeout = min(self._timeouts.detach_s, max(0.1, deadline - time.monotonic()))
        return self._plugger.undo_marked(le, timeout)

    def sync(self, vm: VmConfig, live_pod_uids: Sequence[str], deadline: float) -> ReleaseResult:
        """Releases leases of this VM's pods that are not alive, once they are older than the grace period."""
        live = set(live_pod_uids)
        cutoff = time.time() - self._timeouts.sync_grace_s
        released, quarantined = list[str](), list[str]()
        for le in self._store.leases(vm=vm.identity, states=(LeaseState.ATTACHED,)):
            if le.pod_uid is None or le.pod_uid in live or le.since > cutoff:
                continue
            log.info(
                "sync: pod %s is gone from VM %s; releasing lease %s (VF %s)",
                le.pod_uid,
                vm.identity,
                le.lease_id,
                le.vf.pci,
            )
            (released if self._undo(le, deadline) else quarantined).append(le.lease_id)
        return ReleaseResult(tuple(released), tuple(quarantined))
