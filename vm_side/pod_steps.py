"""The interface of the datapath steps the pod lifecycle runs after binding (VPP, DPDK env)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Protocol, runtime_checkable

from vm_side.demand import Mode
from vm_side.pod_record import PodRecord


class PodStep(Protocol):
    """A datapath step run after binding (e.g. hand VFs to VPP, prepare the DPDK env); undone in reverse.

    `apply` returns the notes its `undo` needs (persisted in the pod record); `undo` must be idempotent.
    """

    @property
    def name(self) -> str: ...

    def handles(self, mode: Mode) -> bool: ...

    def apply(self, rec: PodRecord, deadline: float) -> dict[str, str]: ...

    def undo(self, rec: PodRecord, notes: Mapping[str, str]) -> None: ...


@runtime_checkable
class ReconcilingStep(PodStep, Protocol):
    """A step whose objects live in an outside system (VPP) that can lose or keep them behind our back.

    `reconcile` matches that system to the pods `live()` lists (called under the step's own lock, so no
    apply or undo interleaves) and returns new notes for pods whose objects it re-created.
    """

    def reconcile(self, live: Callable[[], Sequence[PodRecord]]) -> Mapping[str, dict[str, str]]: ...
