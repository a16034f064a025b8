"""Protobuf <-> records, both directions, so the server and the client share one mapping."""

from __future__ import annotations

from dataclasses import dataclass

from contract.host_api import GrantedVf, VfRequest
from contract.pci import PciAddress
from host_side.api import hostplug_pb2 as _pb
from host_side.api.lease_state import LeaseState


def request_to_pb(r: VfRequest) -> _pb.VfRequest:
    # None leaves an optional field unset (HasField false): "not asked", unlike 0 or False.
    return _pb.VfRequest(
        pool=r.pool,
        count=r.count,
        mac=r.mac or "",
        vlan=r.vlan,
        qos=r.qos,
        trust=r.trust,
        spoofchk=r.spoofchk,
        min_tx_rate_mbps=r.min_tx_rate_mbps,
        max_tx_rate_mbps=r.max_tx_rate_mbps,
        numa=r.numa,
    )


def request_from_pb(m: _pb.VfRequest) -> VfRequest:
    return VfRequest(
        pool=m.pool,
        count=m.count,
        mac=m.mac or None,
        vlan=m.vlan if m.HasField("vlan") else None,
        qos=m.qos,
        trust=m.trust if m.HasField("trust") else None,
        spoofchk=m.spoofchk if m.HasField("spoofchk") else None,
        min_tx_rate_mbps=m.min_tx_rate_mbps,
        max_tx_rate_mbps=m.max_tx_rate_mbps,
        numa=m.numa if m.HasField("numa") else None,
    )


def granted_to_pb(g: GrantedVf) -> _pb.GrantedVf:
    return _pb.GrantedVf(
        lease_id=g.lease_id,
        host_pci=str(g.host_pci),
        guest_pci=str(g.guest_pci) if g.guest_pci else "",
        mac=g.mac,
        vlan=g.vlan,
        pool=g.pool,
        numa=g.numa,  # None: unset
        request_index=g.request_index,
    )


def granted_from_pb(m: _pb.GrantedVf) -> GrantedVf:
    return GrantedVf(
        lease_id=m.lease_id,
        pool=m.pool,
        host_pci=PciAddress.parse(m.host_pci),
        guest_pci=PciAddress.parse(m.guest_pci) if m.guest_pci else None,
        mac=m.mac,
        vlan=m.vlan,
        numa=m.numa if m.HasField("numa") else None,
        request_index=m.request_index,
    )


@dataclass(frozen=True)
class LeaseInfo:
    """A lease as List reports it (its state as `lease_state.reported` says)."""

    lease_id: str
    state: LeaseState
    vm: str
    pool: str
    pf: str
    vf_index: int
    host_pci: str
    guest_pci: str | None
    pod_uid: str | None
    pod_name: str | None
    mac: str
    vlan: int
    numa: int | None
    since: float
    reason: str | None


def lease_from_pb(m: _pb.Lease) -> LeaseInfo:
    return LeaseInfo(
        lease_id=m.lease_id,
        state=LeaseState(m.state),
        vm=m.vm,
        pool=m.pool,
        pf=m.pf,
        vf_index=m.vf_index,
        host_pci=m.host_pci,
        guest_pci=m.guest_pci or None,
        pod_uid=m.pod_uid or None,
        pod_name=m.pod_name or None,
        mac=m.mac,
        vlan=m.vlan,
        numa=m.numa if m.HasField("numa") else None,
        since=m.since,
        reason=m.reason or None,
    )
