"""Records <-> protobuf: an optional field left out stays "not asked", apart from 0 or False."""

from __future__ import annotations

import pytest

from contract.host_api import GrantedVf, VfRequest
from contract.pci import PciAddress
from host_side.api.wire import granted_from_pb, granted_to_pb, request_from_pb, request_to_pb

HOST_PCI = PciAddress.parse("0000:3b:10.0")


@pytest.mark.parametrize(
    "req",
    [
        VfRequest("fast", 1),
        VfRequest("fast", 2, vlan=0, trust=False, spoofchk=False, numa=0),
        VfRequest("fast", 1, mac="02:00:00:00:00:01", vlan=100, trust=True, spoofchk=True, numa=1),
    ],
    ids=["unset", "zero-and-false", "set"],
)
def test_request_round_trip_keeps_unset_apart_from_zero(req: VfRequest) -> None:
    m = request_to_pb(req)
    assert m.HasField("vlan") is (req.vlan is not None)
    assert m.HasField("trust") is (req.trust is not None)
    assert request_from_pb(m) == req


@pytest.mark.parametrize("numa", [None, 0, 1])
def test_granted_round_trip_keeps_numa(numa: int | None) -> None:
    g = GrantedVf("lease-1", "fast", HOST_PCI, None, "02:00:00:00:00:01", 0, numa, 0)
    assert granted_to_pb(g).HasField("numa") is (numa is not None)
    assert granted_from_pb(granted_to_pb(g)) == g
