"""Time budgets against the runtime's deadline: a margin is always kept back so a rollback still fits."""

from __future__ import annotations

import time


class DeadlineNear(Exception):
    """Too little time is left to start the next step and still roll back before the deadline."""


def check_time(deadline: float, margin_s: float, what: str) -> None:
    """Raises DeadlineNear when less than the margin is left before `deadline` (a time.monotonic() value)."""
    left = deadline - time.monotonic()
    if left < margin_s:
        raise DeadlineNear(f"{left:.2f}s left before {what}, under the {margin_s}s rollback margin")


def host_budget(deadline: float | None, margin_s: float, rollback: bool = False) -> float | None:
    """Time a host call may take before `deadline` (None: no deadline, the configured timeout).
    A rollback may use the margin: that is what it was kept for."""
    if deadline is None:
        return None
    return max(deadline - time.monotonic() - (0 if rollback else margin_s), 0.05)
