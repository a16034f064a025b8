from __future__ import annotations

from collections import Counter

import pytest
from hypothesis import given
from hypothesis import strategies as st

from contract.errors import Exhausted, InvalidRequest, PermissionDenied
from contract.host_api import VfRequest
from contract.pci import PciAddress
from host_side.api.lease_state import LeaseState
from host_side.config import PoolConfig
from host_side.policy import (
    Candidate,
    check_quota,
    choose_vfs,
    generate_mac,
    macs_unique,
    normalize_mac,
    validate_request,
)

POOL = PoolConfig("net", ("ens1f0",), None, 0, False, False, 0, 0)


def cand(pf: str, index: int, *, numa: int | None = 0, state: str = "free", group_size: int = 1) -> Candidate:
    bus = 0x3C if pf == "a" else 0x5F
    return Candidate(
        PciAddress(0, bus, index // 8, index % 8), pf, index, numa, index, group_size, LeaseState(state)
    )


def test_spreads_over_pfs_most_free_first_then_lowest_index():
    free = [cand("a", i) for i in range(2)] + [cand("b", i) for i in range(4)]
    chosen = choose_vfs(free, 4, pool="net")
    # b has most free (4 vs 2): b0; then 3 vs 2: b1; then 2 vs 2, tie by name: a0; then b has 2, a 1: b2.
    assert [(c.pf, c.index) for c in chosen] == [("b", 0), ("b", 1), ("a", 0), ("b", 2)]


def test_same_input_in_any_order_gives_the_same_choice():
    free = [cand("a", i) for i in range(5)] + [cand("b", i) for i in range(5)]
    assert choose_vfs(free, 3, pool="net") == choose_vfs(list(reversed(free)), 3, pool="net")


def test_never_quarantined_or_busy_or_shared_iommu_group():
    free = [
        cand("a", 0, state="quarantined"),
        cand("a", 1, state="attached"),
        cand("a", 2, group_size=2),
        cand("a", 3),
    ]
    assert [c.index for c in choose_vfs(free, 1, pool="net")] == [3]
    with pytest.raises(Exhausted, match="pool 'net' has 1 usable free VF"):
        choose_vfs(free, 2, pool="net")


def test_numa_filter():
    free = [cand("a", 0, numa=0), cand("b", 0, numa=1), cand("b", 1, numa=None)]
    assert [c.pf for c in choose_vfs(free, 1, pool="net", numa=1)] == ["b"]
    with pytest.raises(Exhausted, match="on NUMA node 2"):
        choose_vfs(free, 1, pool="net", numa=2)


@given(
    st.lists(
        st.tuples(st.sampled_from("abc"), st.integers(0, 63), st.sampled_from(["free", "quarantined"])),
        unique_by=lambda t: (t[0], t[1]),
    ),
    st.integers(1, 10),
)
def test_choice_is_distinct_free_and_balanced(vfs, count):
    free = [cand(pf, i, state=s) for pf, i, s in vfs]
    usable = Counter(c.pf for c in free if c.state == "free")
    if sum(usable.values()) < count:
        with pytest.raises(Exhausted):
            choose_vfs(free, count, pool="net")
        return
    chosen = choose_vfs(free, count, pool="net")
    assert len(set(chosen)) == count and all(c.state == "free" for c in chosen)
    # Spread: what stays free per PF differs by at most one among the PFs that got VFs.
    taken = Counter(c.pf for c in chosen)
    left = {pf: usable[pf] - taken[pf] for pf in taken}
    assert max(left.values()) - min(left.values()) <= 1 or min(left.values()) == 0


def test_generated_macs_are_locally_administered_unicast_and_unique():
    used: set[str] = set()
    for _ in range(200):
        mac = generate_mac("lease", used)  # same seed: uniqueness comes from `used`
        first = int(mac[:2], 16)
        assert first & 0b10 and not first & 0b01
        assert mac not in used
        used.add(mac)
        assert normalize_mac(mac) == mac
    assert generate_mac("x", set()) == generate_mac("x", set())


@pytest.mark.parametrize(
    ("mac", "msg"),
    [("01:00:5e:00:00:01", "multicast"), ("00:00:00:00:00:00", "not usable"), ("02:00:00:00:00", "six hex")],
)
def test_bad_macs(mac, msg):
    with pytest.raises(InvalidRequest, match=msg):
        normalize_mac(mac)
    assert normalize_mac("02-AB-00-00-00-01") == "02:ab:00:00:00:01"


@pytest.mark.parametrize(
    ("req", "err", "msg"),
    [
        (VfRequest("net", count=0), InvalidRequest, "count 0 must be 1..64"),
        (VfRequest("net", vlan=4095), InvalidRequest, "VLAN 4095 must be 0..4094"),
        (VfRequest("net", qos=8, vlan=5), InvalidRequest, "QoS 8 must be 0..7"),
        (VfRequest("net", qos=3), InvalidRequest, "QoS needs a VLAN"),
        (VfRequest("net", max_tx_rate_mbps=10, min_tx_rate_mbps=20), InvalidRequest, "is above"),
        (VfRequest("net", max_tx_rate_mbps=500_000), InvalidRequest, "max_tx_rate_mbps 500000"),
        (VfRequest("net", mac="02:00:00:00:00:01", count=2), InvalidRequest, "fixed MAC needs count 1"),
        (VfRequest("net", trust=True), PermissionDenied, "allow_trust"),
        (VfRequest("net", spoofchk=False), PermissionDenied, "allow_spoofchk_off"),
    ],
)
def test_request_validation_names_the_field(req, err, msg):
    with pytest.raises(err, match=msg) as e:
        validate_request(req, POOL, 2)
    assert "request 2 (pool 'net')" in str(e.value)


def test_valid_request_and_duplicate_macs():
    validate_request(
        VfRequest("net", vlan=7, qos=2, min_tx_rate_mbps=10, max_tx_rate_mbps=100, numa=1), POOL, 0
    )
    with pytest.raises(InvalidRequest, match="asked twice"):
        macs_unique([VfRequest("net", mac="02:00:00:00:00:01"), VfRequest("net", mac="02-00-00-00-00-01")])


def test_quota_and_pool_cap():
    check_quota("vm", 2, Counter(net=2), Counter(net=2), 4, {"net": 0})
    with pytest.raises(Exhausted, match=r"holds 3 VF.*quota is 4"):
        check_quota("vm", 3, Counter(net=3), Counter(net=2), 4, {"net": 0})
    with pytest.raises(Exhausted, match="pool allows 2 per VM"):
        check_quota("vm", 1, Counter(net=1), Counter(net=2), 9, {"net": 2})


@given(st.lists(st.integers(0, 20), min_size=1, max_size=4), st.integers(1, 6))
def test_lists_cut_per_pf_choose_like_full_lists(free_per_pf, count):
    """The store hands over only the first `count` free VFs of each PF plus the PF's free count."""
    full = [cand("ab"[p % 2] + str(p), i) for p, n in enumerate(free_per_pf) for i in range(n)]
    cut = [
        Candidate(c.pci, c.pf, c.index, c.numa, c.iommu_group, c.iommu_group_size, c.state, pf_free=n)
        for p, n in enumerate(free_per_pf)
        for c in full
        if c.pf == "ab"[p % 2] + str(p) and c.index < count
    ]
    if sum(free_per_pf) < count:
        with pytest.raises(Exhausted, match=f"has {sum(free_per_pf)} usable"):
            choose_vfs(cut, count, pool="net")
        return
    assert choose_vfs(cut, count, pool="net") == tuple(
        Candidate(c.pci, c.pf, c.index, c.numa, c.iommu_group, c.iommu_group_size, c.state, pf_free=n)
        for c in choose_vfs(full, count, pool="net")
        for p, n in enumerate(free_per_pf)
        if c.pf == "ab"[p % 2] + str(p)
    )
