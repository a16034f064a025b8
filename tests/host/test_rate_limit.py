"""The per-VM token bucket: pure, then over the real mTLS server with two VMs' real certificates."""

from __future__ import annotations

import pytest

from contract.errors import ErrorKind
from contract.host_api import HostCallError
from host_side.rate_limit import Bucket, RateLimiter, take
from tests.host.conftest import Pki, running_service


def test_bucket_spends_its_burst_then_says_when_a_token_is_back():
    b = Bucket(tokens=2.0, at=0.0)
    assert [take(b, 0.0, 10.0, 2) for _ in range(2)] == [0.0, 0.0]
    assert take(b, 0.0, 10.0, 2) == pytest.approx(0.1)
    assert take(b, 0.05, 10.0, 2) == pytest.approx(0.05)
    assert take(b, 0.1, 10.0, 2) == 0.0
    # Idle for long, it refills only up to the burst.
    b2 = Bucket(tokens=0.0, at=0.0)
    assert [take(b2, 100.0, 10.0, 2) for _ in range(3)][2] > 0


def test_limiter_keeps_a_bucket_per_identity():
    lim = RateLimiter(1.0, 1)
    assert lim.wait_s("vm-a", 0.0) == 0.0
    assert lim.wait_s("vm-a", 0.0) == pytest.approx(1.0)
    assert lim.wait_s("vm-b", 0.0) == 0.0


def test_a_hammering_vm_gets_resource_exhausted_with_a_hint_and_the_other_vm_is_served(lab_pki: Pki):
    with (
        running_service(lab_pki, limits="rate_per_s = 2\nburst = 5") as svc,
        svc.client("vm-a") as a,
        svc.client("vm-b") as b,
    ):
        refusals: list[HostCallError] = []
        for _ in range(30):
            try:
                a.health()
            except HostCallError as e:
                refusals.append(e)
        assert len(refusals) >= 20
        first = refusals[0]
        assert first.code == ErrorKind.RESOURCE_EXHAUSTED and first.retryable
        assert first.retry_after_s is not None and 0 < first.retry_after_s <= 0.5
        assert "VM vm-a is over its request rate (2/s, burst 5); retry in" in first.detail
        # vm-b's own bucket is full: every call within its burst succeeds while vm-a is refused.
        assert [b.health().identity for _ in range(5)] == ["vm-b"] * 5
        # The admin socket is never limited.
        with svc.admin() as adm:
            assert all(adm.health().identity == "admin" for _ in range(10))
