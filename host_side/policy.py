"""Pure decisions of the host side: which VFs to hand out, MAC addresses, and request validation."""

from __future__ import annotations

import hashlib
import re
from collections import Counter
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass

from contract.errors import Exhausted, InvalidRequest, PermissionDenied
from contract.host_api import VfRequest
from contract.pci import PciAddress
from host_side.api.lease_state import LeaseState
from host_side.config import PoolConfig

_MAC_RE = re.compile(r"[0-9a-f]{2}(:[0-9a-f]{2}){5}")
MAX_RATE_MBPS = 400_000


@dataclass(frozen=True)
class Candidate:
    """A VF as the chooser sees it."""

    pci: PciAddress
    pf: str
    index: int
    numa: int | None
    iommu_group: int | None
    iommu_group_size: int
    state: LeaseState
    # Usable free VFs of this VF's PF when the caller passes only the first few of each PF (a store
    # with thousands of VFs does); None: count the candidates given.
    pf_free: int | None = None


def choose_vfs(
    candidates: Iterable[Candidate],
    count: int,
    *,
    pool: str,
    numa: int | None = None,
) -> tuple[Candidate, ...]:
    """Picks `count` free VFs, spreading them over PFs (the PF with most free VFs first).

    Ties go to the PF name, then the lowest VF index, so the same state gives the same answer. VFs that
    share their IOMMU group with other devices cannot be passed through alone and are never chosen;
    neither are quarantined ones.

    Raises:
        Exhausted: fewer than `count` VFs fit.
    """
    by_pf: dict[str, list[Candidate]] = {}
    for c in candidates:
        if c.state is not LeaseState.FREE or c.iommu_group_size > 1:
            continue
        if numa is not None and c.numa != numa:
            continue
        by_pf.setdefault(c.pf, []).append(c)
    left: dict[str, int] = {}
    for pf, vfs in by_pf.items():
        vfs.sort(key=lambda c: c.index, reverse=True)  # pop() takes the lowest index
        known = [c.pf_free for c in vfs if c.pf_free is not None]
        left[pf] = min(known) if known else len(vfs)
    # A PF's list may be cut short, but never below `count`: this is the true number up to `count`.
    available = sum(min(left[pf], len(vfs)) for pf, vfs in by_pf.items())
    if available < count:
        where = f" on NUMA node {numa}" if numa is not None else ""
        raise Exhausted(
            f"pool {pool!r} has {available} usable free VF(s){where}, {count} asked; "
            "wait for releases, ask for fewer, or add VFs (sriov_numvfs) to the pool's PFs"
        )
    chosen: list[Candidate] = []
    for _ in range(count):
        pf = min((pf for pf in by_pf if by_pf[pf]), key=lambda pf: (-left[pf], pf))
        chosen.append(by_pf[pf].pop())
        left[pf] -= 1
    return tuple(chosen)


def check_quota(
    vm: str,
    held: int,
    held_by_pool: Counter[str],
    new_by_pool: Counter[str],
    quota: int,
    pools: dict[str, int],
) -> None:
    """Raises Exhausted when taking `new_by_pool` more would pass the VM's quota or a pool's per-VM max.

    `pools` maps pool name to its per-VM max (0: none)."""
    total_new = sum(new_by_pool.values())
    if held + total_new > quota:
        raise Exhausted(
            f"VM {vm!r} holds {held} VF(s) and asks {total_new} more; its quota is {quota}. "
            "Release VFs of finished pods (or raise the VM's quota in the host config)"
        )
    for pool, n in new_by_pool.items():
        cap = pools.get(pool, 0)
        if cap and held_by_pool[pool] + n > cap:
            raise Exhausted(
                f"VM {vm!r} holds {held_by_pool[pool]} VF(s) of pool {pool!r} and asks {n} more; "
                f"the pool allows {cap} per VM"
            )


def normalize_mac(mac: str) -> str:
    """Lower-case colon form of a unicast, non-zero MAC.

    Raises:
        InvalidRequest: not a MAC, multicast or all-zero.
    """
    m = mac.strip().lower().replace("-", ":")
    if not _MAC_RE.fullmatch(m):
        raise InvalidRequest(f"MAC {mac!r} is not six hex pairs like 02:00:00:00:00:01")
    first = int(m[:2], 16)
    if first & 1:
        raise InvalidRequest(f"MAC {mac!r} is multicast (lowest bit of the first octet); give a unicast MAC")
    if m == "00:00:00:00:00:00":
        raise InvalidRequest("MAC 00:00:00:00:00:00 is not usable; omit the MAC to get a generated one")
    return m


def generate_mac(seed: str, used: Collection[str]) -> str:
    """A locally administered unicast MAC (02:xx:...) derived from `seed`, unique among `used`."""
    for attempt in range(1 << 16):
        digest = hashlib.sha256(f"{seed}/{attempt}".encode()).digest()
        mac = ":".join(f"{b:02x}" for b in (0x02, *digest[:5]))
        if mac not in used:
            return mac
    raise Exhausted("no unused generated MAC found; this needs ~2^40 MACs in use, check the lease store")


def validate_request(req: VfRequest, pool: PoolConfig, index: int) -> None:
    """Checks one request line against the pool's rules.

    Raises:
        InvalidRequest: count, MAC, VLAN, QoS or rates out of range.
        PermissionDenied: trust on or spoof check off where the pool forbids it.
    """
    where = f"request {index} (pool {pool.name!r})"
    if not 1 <= req.count <= 64:
        raise InvalidRequest(f"{where}: count {req.count} must be 1..64")
    if req.mac is not None:
        normalize_mac(req.mac)
        if req.count != 1:
            raise InvalidRequest(f"{where}: a fixed MAC needs count 1 (got {req.count}); split the request")
    if req.vlan is not None and not 0 <= req.vlan <= 4094:
        raise InvalidRequest(f"{where}: VLAN {req.vlan} must be 0..4094 (0: untagged)")
    if not 0 <= req.qos <= 7:
        raise InvalidRequest(f"{where}: QoS {req.qos} must be 0..7 (802.1p priority)")
    if req.qos and not (req.vlan if req.vlan is not None else pool.default_vlan):
        raise InvalidRequest(f"{where}: QoS needs a VLAN; set vlan or the pool's default_vlan")
    for name, rate in (
        ("min_tx_rate_mbps", req.min_tx_rate_mbps),
        ("max_tx_rate_mbps", req.max_tx_rate_mbps),
    ):
        if not 0 <= rate <= MAX_RATE_MBPS:
            raise InvalidRequest(f"{where}: {name} {rate} must be 0..{MAX_RATE_MBPS}")
    if req.max_tx_rate_mbps and req.min_tx_rate_mbps > req.max_tx_rate_mbps:
        raise InvalidRequest(
            f"{where}: min_tx_rate_mbps {req.min_tx_rate_mbps} is above "
            f"max_tx_rate_mbps {req.max_tx_rate_mbps}"
        )
    if req.numa is not None and not 0 <= req.numa <= 255:
        raise InvalidRequest(f"{where}: NUMA node {req.numa} must be 0..255")
    if req.trust and not pool.allow_trust:
        raise PermissionDenied(f"{where}: the pool does not allow trust on; ask the host admin (allow_trust)")
    if req.spoofchk is False and not pool.allow_spoofchk_off:
        raise PermissionDenied(
            f"{where}: the pool does not allow spoof checking off; ask the host admin (allow_spoofchk_off)"
        )


def macs_unique(requests: Sequence[VfRequest]) -> None:
    """Raises InvalidRequest when two lines of one call ask for the same MAC."""
    macs = [normalize_mac(r.mac) for r in requests if r.mac is not None]
    dup = [m for m, n in Counter(macs).items() if n > 1]
    if dup:
        raise InvalidRequest(f"MAC {dup[0]} is asked twice in one call; each VF needs its own MAC")
