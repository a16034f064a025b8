"""The attach path (Attach and Claim): warm spares where they fit, hot-plug for the rest; all or nothing.

What a call took is given back when a later step fails; a retried call gets the answer of the first.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor

from contract.errors import (
    Exhausted,
    HostSideError,
    InvalidRequest,
    PermissionDenied,
    PreconditionFailed,
    UnknownPool,
)
from contract.host_api import GrantedVf, VfRequest
from host_side.allocation import ColdVf, desired_settings, reserve
from host_side.api.lease_state import LeaseState, reported
from host_side.backends.base import Hotplug, VfNetlink
from host_side.config import PoolConfig, VmConfig
from host_side.leases import Lease, LeaseStore
from host_side.plugging import Plugger, remaining
from host_side.policy import macs_unique, validate_request
from host_side.replay import RequestGate, answer_of, dump_granted, load_granted

log = logging.getLogger(__name__)

_PLUG_PARALLEL = 8  # hot-plugs of one call in flight at once


def _granted(lease: Lease) -> GrantedVf:
    return GrantedVf(
        lease_id=lease.lease_id,
        pool=lease.pool,
        host_pci=lease.vf.pci,
        guest_pci=lease.guest_pci,
        mac=lease.desired.mac,
        vlan=lease.desired.vlan,
        numa=lease.numa,
        request_index=lease.request_index,
    )


def _pool(pools: Mapping[str, PoolConfig], vm: VmConfig, name: str) -> PoolConfig:
    pool = pools.get(name)
    if pool is None:
        raise UnknownPool(f"pool {name!r} does not exist; pools: {', '.join(sorted(pools))}")
    if name not in vm.pools:
        raise PermissionDenied(f"VM {vm.identity!r} may not use pool {name!r}; it may use {list(vm.pools)}")
    return pool


class Attacher:
    def __init__(
        self,
        pools: Mapping[str, PoolConfig],
        store: LeaseStore,
        hotplug: Hotplug,
        netlink: VfNetlink,
        plugger: Plugger,
        gate: RequestGate,
        rescan: Callable[[], bool],
    ) -> None:
        self._pools = pools
        self._store = store
        self._hotplug = hotplug
        self._netlink = netlink
        self._plugger = plugger
        self._gate = gate
        self._rescan = rescan

    def attach(
        self,
        vm: VmConfig,
        pod_uid: str,
        pod_name: str,
        requests: Sequence[VfRequest],
        request_id: str,
        deadline: float,
        *,
        warm_only: bool = False,
    ) -> list[GrantedVf]:
        """Warm spares where they fit, hot-plug for the rest; all or nothing. `deadline` is monotonic."""
        if not pod_uid or not request_id:
            raise InvalidRequest("pod_uid and request_id are required")
        if not requests:
            raise InvalidRequest(f"pod {pod_uid}: no VF requests given")
        pools = [_pool(self._pools, vm, r.pool) for r in requests]
        for i, (req, pool) in enumerate(zip(requests, pools, strict=True)):
            validate_request(req, pool, i)
        macs_unique(requests)
        with self._gate.once(vm.identity, request_id, deadline):
            stored = answer_of(self._store, vm.identity, request_id, "attach")
            if stored is not None:
                log.info(
                    "pod %s on VM %s: request %s answered before; same answer",
                    pod_uid,
                    vm.identity,
                    request_id,
                )
                return load_granted(stored[1])
            total = sum(r.count for r in requests)
            prior = self._store.leases(vm=vm.identity, request_id=request_id)
            if prior and len(prior) == total and all(le.state is LeaseState.ATTACHED for le in prior):
                granted = [_granted(le) for le in prior]  # finished before a crash took the answer away
            else:
                for le in prior:  # a half-done earlier try: give it back, start again
                    self._plugger.undo(le)
                granted = self._attach_new(
                    vm, pod_uid, pod_name, requests, pools, request_id, deadline, warm_only
                )
            self._store.save_answer(vm.identity, request_id, "attach", dump_granted(granted))
            return granted

    def _attach_new(
        self,
        vm: VmConfig,
        pod_uid: str,
        pod_name: str,
        requests: Sequence[VfRequest],
        pools: Sequence[PoolConfig],
        request_id: str,
        deadline: float,
        warm_only: bool,
    ) -> list[GrantedVf]:
        remaining(deadline, f"attach for pod {pod_uid}")
        if not self._hotplug.domain_running(vm.domain):
            raise PreconditionFailed(
                f"VM {vm.identity} (domain {vm.domain}) is not running; start it and retry"
            )
        reserved: list[Lease] = []
        with self._plugger.phase("allocate"), self._plugger.alloc:
            used = self._store.used_macs()
            held = self._store.leases(vm=vm.identity)
            claimed, cold = self._claim_warm(held, pod_uid, pod_name, requests, pools, request_id, used)
            if cold and warm_only:
                self._plugger.give_back_claims(claimed)
                raise Exhausted(
                    f"pod {pod_uid}: {len(cold)} VF(s) have no warm spare on VM {vm.identity}; use Attach"
                )
            try:
                try:
                    reserved = reserve(
                        self._store, self._pools, vm, pod_uid, pod_name, request_id, cold, held, used
                    )
                except Exhausted:
                    # sriov_numvfs may have grown since the last scan: look before saying no.
                    if not self._rescan():
                        raise
                    reserved = reserve(
                        self._store, self._pools, vm, pod_uid, pod_name, request_id, cold, held, used
                    )
            except HostSideError:
                self._plugger.give_back_claims(claimed)
                raise
            mine = [*(got for _, got in claimed), *reserved]
            self._plugger.mark(mine)  # before the allocation lock opens, so reconcile leaves them alone
        try:
            return self._finish_attach(vm, pod_uid, pod_name, claimed, reserved, deadline)
        finally:
            self._plugger.unmark(mine)

    def _claim_warm(
        self,
        held: Sequence[Lease],
        pod_uid: str,
        pod_name: str,
        requests: Sequence[VfRequest],
        pools: Sequence[PoolConfig],
        request_id: str,
        used: set[str],
    ) -> tuple[list[tuple[Lease, Lease]], list[ColdVf]]:
        """Claims the VM's warm spares that fit; returns them (spare as it was, claimed) and the VFs left
        to hot-plug. The caller holds the allocation lock."""
        claimed: list[tuple[Lease, Lease]] = []
        cold: list[ColdVf] = []
        warm = [le for le in held if reported(le.state, le.pod_uid) is LeaseState.WARM]
        for i, (req, pool) in enumerate(zip(requests, pools, strict=True)):
            for _ in range(req.count):
                spare = next(
                    (le for le in warm if le.pool == pool.name and (req.numa is None or le.numa == req.numa)),
                    None,
                )
                if spare is None:
                    cold.append((i, req, pool))
                    continue
                warm.remove(spare)
                desired = desired_settings(req, pool, f"{spare.lease_id}/{pod_uid}", used)
                got = self._store.claim_warm(spare, pod_uid, pod_name, request_id, i, desired)
                if got is None:
                    cold.append((i, req, pool))
                else:
                    claimed.append((spare, got))
        return claimed, cold

    def _finish_attach(
        self,
        vm: VmConfig,
        pod_uid: str,
        pod_name: str,
        claimed: Sequence[tuple[Lease, Lease]],
        reserved: Sequence[Lease],
        deadline: float,
    ) -> list[GrantedVf]:
        """VF settings for claimed spares, hot-plug for reserved VFs; everything given back on failure."""
        done: list[Lease] = []
        try:
            for _, le in claimed:
                with self._plugger.phase("netlink"):
                    self._netlink.apply_vf(le.vf, le.desired)
                done.append(le)
            done.extend(self._plug_all(reserved, deadline))
        except BaseException as e:
            log.warning(
                "attach for pod %s on VM %s failed (%s); giving back %d VF(s)",
                pod_uid,
                vm.identity,
                e,
                len(claimed) + len(reserved),
            )
            self._plugger.give_back_claims(claimed)
            for le in reserved:
                current = self._store.get(le.lease_id)
                # A quarantined one timed out: its device may still appear, so it waits for reconcile.
                if current is not None and current.state is not LeaseState.QUARANTINED:
                    self._plugger.undo(current)
            raise
        log.info(
            "attached %d VF(s) to pod %s (%s) on VM %s: %s",
            len(done),
            pod_name,
            pod_uid,
            vm.identity,
            ", ".join(f"{le.vf.pci}->{le.guest_pci}" for le in done),
        )
        return sorted((_granted(le) for le in done), key=lambda g: (g.request_index, str(g.host_pci)))

    def _plug_all(self, reserved: Sequence[Lease], deadline: float) -> list[Lease]:
        """Hot-plugs a call's VFs side by side (the guest's event waits overlap), waits for all of them,
        then raises the first error; each failed one was already freed or quarantined by `Plugger.plug`."""
        if len(reserved) <= 1:
            return [self._plugger.plug(le, deadline) for le in reserved]
        with ThreadPoolExecutor(max_workers=min(len(reserved), _PLUG_PARALLEL)) as ex:
            futures = [ex.submit(self._plugger.plug, le, deadline) for le in reserved]
        for f in futures:
            if (err := f.exception()) is not None:
                raise err
        return [f.result() for f in futures]
