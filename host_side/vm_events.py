"""What a libvirt domain event means for the leases: a pure decision, carried out by `vm_watch`.

Nothing is freed on the event's word alone: every action re-reads the domain from libvirt (the reconcile
of that domain), so a VM already started again, or a crashed one whose QEMU libvirt preserved, keeps what
it really holds. The event only makes that check happen now instead of at the next periodic reconcile.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from host_side.backends.base import DomainChange, DomainEvent


@dataclass(frozen=True)
class VmAction:
    """The work one event asks for; `domain` as the config and the leases name it (name or UUID)."""

    why: str
    domain: str | None = None  # reconcile this domain's leases against its live XML now
    refill_vm: str | None = None  # then top up this VM's warm spares
    everything: bool = False  # reconcile every domain (events were missed)


_CHECK_DOMAIN = {
    DomainChange.STOPPED: "stopped; its leases are freed once libvirt confirms it is not running",
    DomainChange.UNDEFINED: "undefined; its leases are freed once libvirt confirms it is gone",
    DomainChange.CRASHED: "crashed; its leases are freed unless libvirt kept its QEMU (on_crash=preserve)",
    DomainChange.REBOOTED: "rebooted; its live devices are checked against its leases",
    DomainChange.STARTED: "started; leases of its earlier run are freed, then warm spares plugged afresh",
}


def known_domain(event: DomainEvent, domains: Mapping[str, str]) -> str | None:
    """The key (name or UUID) under which `domains` (domain -> VM identity) knows the event's domain."""
    for key in (event.domain, event.uuid):
        if key and key in domains:
            return key
    return None


def plan(event: DomainEvent, domains: Mapping[str, str]) -> VmAction | None:
    """The action for `event`, given the domains of the config and of the leases (domain -> VM identity);
    None when the event changes nothing for any lease."""
    if event.change is DomainChange.RECONNECTED:
        return VmAction(why="libvirtd connection is back; events may have been missed", everything=True)
    why = _CHECK_DOMAIN.get(event.change)
    key = known_domain(event, domains)
    if why is None or key is None:
        # SHUTDOWN is followed by STOPPED once QEMU exits; until then the devices are still in it.
        return None
    refill = domains[key] if event.change is DomainChange.STARTED else None
    return VmAction(why=f"domain {event.domain or key} {why}", domain=key, refill_vm=refill)
