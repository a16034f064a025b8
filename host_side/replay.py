"""Retried calls: one call per (VM, request id) at a time, and the stored answer of a finished one replayed."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field

from contract.errors import DeadlineExceeded, InvalidRequest
from contract.host_api import GrantedVf
from contract.pci import PciAddress
from host_side.leases import LeaseStore


@dataclass
class _Inflight:
    """The lock of one (VM, request id) and how many calls hold or wait for it."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    users: int = 0


class RequestGate:
    """Serializes calls of one VM that carry the same request id (a retry racing the original)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._inflight: dict[tuple[str, str], _Inflight] = {}

    @contextmanager
    def once(self, identity: str, request_id: str, deadline: float) -> Iterator[None]:
        key = (identity, request_id)
        with self._lock:
            entry = self._inflight.setdefault(key, _Inflight())
            entry.users += 1
        try:
            if not entry.lock.acquire(timeout=max(0.0, deadline - time.monotonic())):
                raise DeadlineExceeded(f"request {request_id} of VM {identity} is still running; retry later")
            try:
                yield
            finally:
                entry.lock.release()
        finally:
            with self._lock:
                entry.users -= 1
                if entry.users == 0:
                    del self._inflight[key]


def answer_of(store: LeaseStore, vm: str, request_id: str, kind: str) -> tuple[str, str] | None:
    """The stored answer to replay for a retried call; an id another kind of call used is the caller's
    mistake (its stored answer would not even parse as this kind's)."""
    stored = store.answer(vm, request_id)
    if stored is not None and stored[0] != kind:
        raise InvalidRequest(
            f"request id {request_id!r} of VM {vm} was used for {stored[0]!r} before; give each call its own id"
        )
    return stored


def dump_granted(vfs: Sequence[GrantedVf]) -> str:
    return json.dumps(
        [
            {**asdict(v), "host_pci": str(v.host_pci), "guest_pci": v.guest_pci and str(v.guest_pci)}
            for v in vfs
        ]
    )


def load_granted(text: str) -> list[GrantedVf]:
    out = []
    for d in json.loads(text):
        d["host_pci"] = PciAddress.parse(d["host_pci"])
        d["guest_pci"] = PciAddress.parse(d["guest_pci"]) if d["guest_pci"] else None
        out.append(GrantedVf(**d))
    return out
