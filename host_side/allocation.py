"""Choosing free VFs for a call's cold VFs and reserving them in one transaction, with their settings."""

from __future__ import annotations

import secrets
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import replace

from contract.host_api import VfRequest
from contract.pci import PciAddress
from host_side.backends.base import VfSettings
from host_side.config import PoolConfig, VmConfig
from host_side.leases import Lease, LeaseStore, Reservation
from host_side.policy import check_quota, choose_vfs, generate_mac, normalize_mac

# A VF still to be found: (index of its request line, the request, its pool).
ColdVf = tuple[int, VfRequest, PoolConfig]


def desired_settings(req: VfRequest, pool: PoolConfig, seed: str, used: set[str]) -> VfSettings:
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


def reserve(
    store: LeaseStore,
    pools: Mapping[str, PoolConfig],
    vm: VmConfig,
    pod_uid: str | None,
    pod_name: str | None,
    request_id: str | None,
    cold: Sequence[ColdVf],
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
        {p.name: p.max_per_vm for p in pools.values()},
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
            for c in store.candidates(pool.name, per_pf, req.numa)
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
                    desired=desired_settings(req, pool, lease_id, used),
                )
            )
    return store.reserve(picks)
