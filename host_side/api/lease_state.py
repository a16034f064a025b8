"""Lease states: the words the lease table stores and List reports (the same on disk and on the wire)."""

from __future__ import annotations

from enum import StrEnum


class LeaseState(StrEnum):
    """A VF's lease, in the order of its life (the admin's status columns follow it).

    WARM is reported, never stored: an ATTACHED lease without a pod (a spare in its VM); `reported` is the
    one place that says so."""

    FREE = "free"
    RESERVED = "reserved"  # nothing touched yet
    ATTACHING = "attaching"  # VF settings and the hot-plug may have happened (original settings saved)
    WARM = "warm"
    ATTACHED = "attached"  # the device is in the guest
    DETACHING = "detaching"  # the unplug may have happened
    QUARANTINED = "quarantined"  # outcome unknown; only an admin or a reconcile that sees the truth frees it


STORED = tuple(s for s in LeaseState if s is not LeaseState.WARM)
HELD = tuple(s for s in STORED if s is not LeaseState.FREE)


def reported(state: LeaseState, pod_uid: str | None) -> LeaseState:
    """The state List and Health report for a stored lease."""
    return LeaseState.WARM if state is LeaseState.ATTACHED and pod_uid is None else state
