"""The lease engine: Attach, Claim, Release, Sync, List, the warm pool and reconciliation.

It turns calls into lease transitions (leases.py), VF settings (VfNetlink) and hot-plugs (Hotplug); the
pure choices come from policy.py. Every call is all or nothing: what a call took is given back when a
later step fails, and a device whose fate is unknown (timeout) is quarantined, never reused.
"""

from __future__ import annotations

import json
import logging
import secrets
import threading
import time
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace

from contract.errors import (
    DeadlineExceeded,
    Exhausted,
    HostSideError,
    InvalidRequest,
    PermissionDenied,
    PreconditionFailed,
    UnknownPool,
)
from contract.host_api import GrantedVf, VfRequest
from contract.pci import PciAddress
from host_side.api.lease_state import LeaseState, reported
from host_side.backends.base import Hotplug, Observe, VfNetlink, VfSettings
from host_side.config import HostConfig, PoolConfig, VmConfig
from host_side.inventory import SysfsInventory
from host_side.leases import Lease, LeaseStore, Reservation
from host_side.plugging import Plugger, remaining
from host_side.policy import (
    check_quota,
    choose_vfs,
    generate_mac,
    macs_unique,
    normalize_mac,
    validate_request,
)
from host_side.reconcile import Reconciler

log = logging.getLogger(__name__)

_PLUG_PARALLEL = 8  # hot-plugs of one call in flight at once


@dataclass
class _Inflight:
    """The lock of one (VM, request id) and how many calls hold or wait for it."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    users: int = 0


@dataclass(frozen=True)
class ReleaseResult:
    released: tuple[str, ...]
    quarantined: tuple[str, ...]


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


def _dump_granted(vfs: Sequence[GrantedVf]) -> str:
    return json.dumps(
        [
            {**asdict(v), "host_pci": str(v.host_pci), "guest_pci": v.guest_pci and str(v.guest_pci)}
            for v in vfs
        ]
    )


def _answer_of(store: LeaseStore, vm: str, request_id: str, kind: str) -> tuple[str, str] | None:
    """The stored answer to replay for a retried call; an id another kind of call used is the caller's
    mistake (its stored answer would not even parse as this kind's)."""
    stored = store.answer(vm, request_id)
    if stored is not None and stored[0] != kind:
        raise InvalidRequest(
            f"request id {request_id!r} of VM {vm} was used for {stored[0]!r} before; give each call its own id"
        )
    return stored


def _load_granted(text: str) -> list[GrantedVf]:
    out = []
    for d in json.loads(text):
        d["host_pci"] = PciAddress.parse(d["host_pci"])
        d["guest_pci"] = PciAddress.parse(d["guest_pci"]) if d["guest_pci"] else None
        out.append(GrantedVf(**d))
    return out


class Engine:
    def __init__(
        self,
        cfg: HostConfig,
        inventory: SysfsInventory,
        store: LeaseStore,
        hotplug: Hotplug,
        netlink: VfNetlink,
        *,
        observe: Observe | None = None,
    ) -> None:
        self._cfg = cfg
        self._store = store
        self._hotplug = hotplug
        self._netlink = netlink
        self._plugger = Plugger(cfg.timeouts, store, hotplug, netlink, observe)
        self._reconciler = Reconciler(cfg, inventory, store, hotplug, netlink, self._plugger)
        self._inflight_lock = threading.Lock()
        self._inflight: dict[tuple[str, str], _Inflight] = {}

    # ---- identity ---------------------------------------------------------------------------------

    def replace_vms(self, vms: Mapping[str, VmConfig]) -> None:
        """A reloaded [vms] table; a VM taken out keeps its leases until the admin releases them."""
        self._cfg = replace(self._cfg, vms=vms)
        self._reconciler.use_config(self._cfg)

    def vm(self, identity: str) -> VmConfig:
        vm = self._cfg.vms.get(identity)
        if vm is None:
            raise PermissionDenied(
                f"identity {identity!r} is not a VM of this host; add it under [vms] in the host config"
            )
        return vm

    # ---- helpers ----------------------------------------------------------------------------------

    @contextmanager
    def _once(self, identity: str, request_id: str, deadline: float) -> Iterator[None]:
        """Serializes calls of one VM that carry the same request id (a retry racing the original)."""
        key = (identity, request_id)
        with self._inflight_lock:
            entry = self._inflight.setdefault(key, _Inflight())
            entry.users += 1
        try:
            if not entry.lock.acquire(timeout=max(0.0, deadline - time.monotonic())):
                raise DeadlineExceeded(f"request {request_id} of VM {identity} is still running; retry later")
            try:
                yield
            finally:
                entry.lock.release()
        finally:
            with self._inflight_lock:
                entry.users -= 1
                if entry.users == 0:
                    del self._inflight[key]

    def _pool(self, vm: VmConfig, name: str) -> PoolConfig:
        pool = self._cfg.pools.get(name)
        if pool is None:
            raise UnknownPool(f"pool {name!r} does not exist; pools: {', '.join(sorted(self._cfg.pools))}")
        if name not in vm.pools:
            raise PermissionDenied(
                f"VM {vm.identity!r} may not use pool {name!r}; it may use {list(vm.pools)}"
            )
        return pool

    def _desired(self, req: VfRequest, pool: PoolConfig, seed: str, used: set[str]) -> VfSettings:
        mac = normalize_mac(req.mac) if req.mac else generate_mac(seed, used)
        used.add(mac)
        return VfSettings(
            mac=mac,
            vlan=req.vlan if req.vlan is not None else pool.default_vlan,
            qos=req.qos,
            spoofchk=req.spoofchk,
            trust=req.trust,
            min_tx_rate_mbps=req.min_tx_rate_mbps,
            max_tx_rate_mbps=req.max_tx_rate_mbps,
        )

    # ---- attach / claim ---------------------------------------------------------------------------

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
        pools = [self._pool(vm, r.pool) for r in requests]
        for i, (req, pool) in enumerate(zip(requests, pools, strict=True)):
            validate_request(req, pool, i)
        macs_unique(requests)
        with self._once(vm.identity, request_id, deadline):
            stored = _answer_of(self._store, vm.identity, request_id, "attach")
            if stored is not None:
                log.info(
                    "pod %s on VM %s: request %s answered before; same answer",
                    pod_uid,
                    vm.identity,
                    request_id,
                )
                return _load_granted(stored[1])
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
            self._store.save_answer(vm.identity, request_id, "attach", _dump_granted(granted))
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
        claimed: list[tuple[Lease, Lease]] = []  # (spare as it was, claimed)
        reserved: list[Lease] = []
        with self._plugger.phase("allocate"), self._plugger.alloc:
            used = self._store.used_macs()
            held = self._store.leases(vm=vm.identity)
            warm = [le for le in held if reported(le.state, le.pod_uid) is LeaseState.WARM]
            cold: list[tuple[int, VfRequest, PoolConfig]] = []
            for i, (req, pool) in enumerate(zip(requests, pools, strict=True)):
                for _ in range(req.count):
                    spare = next(
                        (
                            le
                            for le in warm
                            if le.pool == pool.name and (req.numa is None or le.numa == req.numa)
                        ),
                        None,
                    )
                    if spare is None:
                        cold.append((i, req, pool))
                        continue
                    warm.remove(spare)
                    desired = self._desired(req, pool, f"{spare.lease_id}/{pod_uid}", used)
                    got = self._store.claim_warm(spare, pod_uid, pod_name, request_id, i, desired)
                    if got is None:
                        cold.append((i, req, pool))
                    else:
                        claimed.append((spare, got))
            if cold and warm_only:
                self._plugger.give_back_claims(claimed)
                raise Exhausted(
                    f"pod {pod_uid}: {len(cold)} VF(s) have no warm spare on VM {vm.identity}; use Attach"
                )
            try:
                try:
                    reserved = self._reserve(vm, pod_uid, pod_name, request_id, cold, held, used)
                except Exhausted:
                    # sriov_numvfs may have grown since the last scan: look before saying no.
                    if not self.rescan():
                        raise
                    reserved = self._reserve(vm, pod_uid, pod_name, request_id, cold, held, used)
            except HostSideError:
                self._plugger.give_back_claims(claimed)
                raise
            mine = [*(got for _, got in claimed), *reserved]
            self._plugger.mark(mine)  # before the allocation lock opens, so reconcile leaves them alone
        try:
            return self._finish_attach(vm, pod_uid, pod_name, claimed, reserved, deadline)
        finally:
            self._plugger.unmark(mine)

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

    def _reserve(
        self,
        vm: VmConfig,
        pod_uid: str | None,
        pod_name: str | None,
        request_id: str | None,
        cold: Sequence[tuple[int, VfRequest, PoolConfig]],
        held: Sequence[Lease],
        used: set[str],
    ) -> list[Lease]:
        """Quota check, choice and one reserving transaction; the caller holds the allocation lock."""
        if not cold:
            return []
        new_by_pool = Counter(pool.name for _, _, pool in cold)
        check_quota(
            vm.identity,
            len(held),
            Counter(le.pool for le in held),
            new_by_pool,
            vm.quota,
            {p.name: p.max_per_vm for p in self._cfg.pools.values()},
        )
        picks: list[Reservation] = []
        taken: set[PciAddress] = set()
        lines: dict[tuple[int, str], tuple[VfRequest, PoolConfig, int]] = {}
        for i, req, pool in cold:  # per request line, so the policy spreads the line's VFs
            n = lines[i, pool.name][2] + 1 if (i, pool.name) in lines else 1
            lines[i, pool.name] = (req, pool, n)
        taken_per_pf: Counter[str] = Counter()
        for (i, _), (req, pool, count) in lines.items():
            # Enough per PF that VFs taken by earlier lines of this call cannot leave a list short.
            per_pf = count + sum(taken_per_pf.values())
            free = [
                replace(c, pf_free=(c.pf_free or 0) - taken_per_pf[c.pf])
                for c in self._store.candidates(pool.name, per_pf, req.numa)
                if c.pci not in taken
            ]
            for choice in choose_vfs(free, count, pool=pool.name, numa=req.numa):
                taken.add(choice.pci)
                taken_per_pf[choice.pf] += 1
                lease_id = secrets.token_hex(8)
                picks.append(
                    Reservation(
                        pci=choice.pci,
                        lease_id=lease_id,
                        vm=vm.identity,
                        domain=vm.domain,
                        pod_uid=pod_uid,
                        pod_name=pod_name,
                        request_id=request_id,
                        request_index=i,
                        desired=self._desired(req, pool, lease_id, used),
                    )
                )
        return self._store.reserve(picks)

    # ---- release ----------------------------------------------------------------------------------

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
        with self._once(owner or "(admin)", request_id or secrets.token_hex(8), deadline):
            if request_id and vm is not None:
                stored = _answer_of(self._store, vm.identity, request_id, "release")
                if stored is not None:
                    d = json.loads(stored[1])
                    return ReleaseResult(tuple(d["released"]), tuple(d["quarantined"]))
            if pod_uid:
                targets = self._store.leases(vm=owner, pod_uid=pod_uid)
                gone: list[str] = []
            else:
                targets, gone = [], []
                for lid in lease_ids:
                    le = self._store.get(lid)
                    if le is None or le.state is LeaseState.FREE:
                        gone.append(lid)  # released before (a retry after a crash)
                    elif vm is not None and le.vm != vm.identity:
                        raise PermissionDenied(
                            f"lease {lid} is not VM {vm.identity}'s; release only your own"
                        )
                    else:
                        targets.append(le)
            busy = [le.lease_id for le in targets if le.state in (LeaseState.RESERVED, LeaseState.ATTACHING)]
            if busy and vm is not None:
                raise PreconditionFailed(
                    f"lease(s) {', '.join(busy)} are still being attached; retry shortly"
                )
            released, quarantined = list(gone), list[str]()
            for le in targets:
                timeout = min(self._cfg.timeouts.detach_s, max(0.1, deadline - time.monotonic()))
                (released if self._plugger.undo_marked(le, timeout) else quarantined).append(le.lease_id)
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

    def sync(self, vm: VmConfig, live_pod_uids: Sequence[str], deadline: float) -> ReleaseResult:
        """Releases leases of this VM's pods that are not alive, once they are older than the grace period."""
        live = set(live_pod_uids)
        cutoff = time.time() - self._cfg.timeouts.sync_grace_s
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
            timeout = min(self._cfg.timeouts.detach_s, max(0.1, deadline - time.monotonic()))
            (released if self._plugger.undo_marked(le, timeout) else quarantined).append(le.lease_id)
        return ReleaseResult(tuple(released), tuple(quarantined))

    def leases(self, vm: VmConfig | None) -> list[Lease]:
        """A VM sees its own leases only; the admin (None) sees all."""
        return self._store.leases(vm=vm.identity if vm else None)

    def counts(self) -> Counter[tuple[str, str]]:
        return self._store.counts()

    # ---- warm pool --------------------------------------------------------------------------------

    def refill_warm(self, only_vm: str | None = None) -> int:
        """Tops up each VM's (or only `only_vm`'s) warm spares; returns how many were plugged. Failures are
        logged, not raised."""
        plugged = 0
        for vm in self._cfg.vms.values():
            if only_vm is not None and vm.identity != only_vm:
                continue
            pools = [self._cfg.pools[p] for p in vm.pools if self._cfg.pools[p].warm_spares]
            if not pools:
                continue
            try:
                if not self._hotplug.domain_running(vm.domain):
                    continue
                with self._plugger.alloc:
                    held = self._store.leases(vm=vm.identity)
                    spares = Counter(
                        le.pool
                        for le in held
                        if le.pod_uid is None and le.state is not LeaseState.QUARANTINED
                    )
                    room = vm.quota - len(held)
                    cold: list[tuple[int, VfRequest, PoolConfig]] = []
                    for pool in pools:
                        for _ in range(min(pool.warm_spares - spares[pool.name], room - len(cold))):
                            cold.append((0, VfRequest(pool=pool.name), pool))
                    reserved = self._reserve(vm, None, None, None, cold, held, self._store.used_macs())
                    self._plugger.mark(reserved)
                try:
                    for le in reserved:
                        try:
                            self._plugger.plug(le, time.monotonic() + self._cfg.timeouts.attach_s)
                        except HostSideError as e:  # Plugger.plug freed or quarantined it; try the next one
                            log.warning(
                                "warm spare VF %s for VM %s not plugged: %s", le.vf.pci, vm.identity, e
                            )
                            continue
                        plugged += 1
                        log.info(
                            "warm spare VF %s (lease %s) plugged into VM %s",
                            le.vf.pci,
                            le.lease_id,
                            vm.identity,
                        )
                finally:
                    self._plugger.unmark(reserved)
            except HostSideError as e:
                log.warning("warm pool of VM %s not refilled: %s", vm.identity, e)
        return plugged

    # ---- reconcile --------------------------------------------------------------------------------

    def rescan(self) -> bool:
        """Re-reads sysfs when VF counts or drivers changed; True when the inventory was updated."""
        return self._reconciler.rescan()

    def reconcile(self, *, startup: bool = False) -> None:
        self._reconciler.run(startup=startup)

    def reconcile_domain(self, domain: str) -> None:
        self._reconciler.run_domain(domain)
