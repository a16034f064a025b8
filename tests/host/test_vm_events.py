"""The pure planner of domain events (host_side.vm_events): which event makes the host check which domain."""

from __future__ import annotations

import pytest

from host_side.backends.base import DomainChange, DomainEvent
from host_side.vm_events import known_domain, plan

DOMAINS = {"guest-a": "vm-a", "5b0c6c1e-0000-4000-8000-000000000001": "vm-b"}


@pytest.mark.parametrize(
    "change", [DomainChange.STOPPED, DomainChange.UNDEFINED, DomainChange.CRASHED, DomainChange.REBOOTED]
)
def test_a_vm_gone_or_reset_has_its_domain_checked_at_once(change: DomainChange) -> None:
    action = plan(DomainEvent(change, domain="guest-a", uuid="u-1"), DOMAINS)
    assert action is not None
    assert (action.domain, action.refill_vm, action.everything) == ("guest-a", None, False)
    assert "guest-a" in action.why


def test_a_vm_started_again_is_checked_then_gets_fresh_spares() -> None:
    action = plan(DomainEvent(DomainChange.STARTED, domain="guest-a"), DOMAINS)
    assert action is not None
    assert (action.domain, action.refill_vm, action.everything) == ("guest-a", "vm-a", False)


def test_a_domain_configured_by_uuid_is_found_by_its_uuid() -> None:
    event = DomainEvent(DomainChange.STOPPED, domain="some-name", uuid="5b0c6c1e-0000-4000-8000-000000000001")
    assert known_domain(event, DOMAINS) == "5b0c6c1e-0000-4000-8000-000000000001"
    action = plan(event, DOMAINS)
    assert action is not None and action.domain == "5b0c6c1e-0000-4000-8000-000000000001"


@pytest.mark.parametrize("change", [DomainChange.SHUTDOWN, DomainChange.OTHER])
def test_events_that_change_nothing_for_the_leases_are_ignored(change: DomainChange) -> None:
    # SHUTDOWN: QEMU (and the devices in it) is still there; STOPPED follows once it exits.
    assert plan(DomainEvent(change, domain="guest-a"), DOMAINS) is None


def test_a_domain_of_no_vm_and_no_lease_is_ignored() -> None:
    assert plan(DomainEvent(DomainChange.STOPPED, domain="someone-else", uuid="u-9"), DOMAINS) is None


def test_a_reconnect_reconciles_everything() -> None:
    action = plan(DomainEvent(DomainChange.RECONNECTED), DOMAINS)
    assert action is not None and action.everything and action.domain is None
