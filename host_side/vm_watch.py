"""Acts on libvirt's domain events off libvirt's event-loop thread: one worker, events in arrival order.

The backend's callbacks only queue (`on_event`); the worker asks `vm_events.plan` what an event means
and has the engine reconcile that domain (freeing the leases of a VM that is gone, VF settings restored
as a release does) or, after a reconnect to libvirtd, every domain.
"""

from __future__ import annotations

import logging
import queue
import threading
from typing import Protocol

from contract.errors import HostSideError
from host_side.backends.base import DomainEvent
from host_side.config import HostConfig
from host_side.leases import Lease
from host_side.vm_events import VmAction, plan

log = logging.getLogger(__name__)


class VmEngine(Protocol):
    """The engine calls the watch needs."""

    def leases(self, vm: None) -> list[Lease]: ...

    def reconcile(self, *, startup: bool = False) -> None: ...

    def reconcile_domain(self, domain: str) -> None: ...

    def refill_warm(self, only_vm: str | None = None) -> int: ...


class VmWatch:
    """The worker thread for domain events; `close()` stops it after the event it is handling."""

    def __init__(self, cfg: HostConfig, engine: VmEngine) -> None:
        self._cfg = cfg
        self._engine = engine
        self._queue: queue.Queue[DomainEvent | None] = queue.Queue()
        self._thread = threading.Thread(target=self._run, name="vm-events", daemon=True)
        self._thread.start()

    def on_event(self, event: DomainEvent) -> None:
        """The listener given to the backend: runs on libvirt's event loop, so it only queues."""
        self._queue.put(event)

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join(10)

    def _domains(self) -> dict[str, str]:
        """Domain (name or UUID, as configured and leased) -> VM identity."""
        out = {le.domain: le.vm for le in self._engine.leases(None)}
        out.update({vm.domain: vm.identity for vm in self._cfg.vms.values()})
        return out

    def _run(self) -> None:
        while (event := self._queue.get()) is not None:
            try:
                action = plan(event, self._domains())
                if action is None:
                    log.debug("domain event %s of %s: nothing to do", event.change.value, event.domain)
                    continue
                self._act(event, action)
            except HostSideError as e:
                log.warning("domain event %s of %s not acted on: %s", event.change.value, event.domain, e)
            except Exception:  # the worker must outlive one bad event; the error is logged in full
                log.exception("domain event %s of %s failed", event.change.value, event.domain)

    def _act(self, event: DomainEvent, action: VmAction) -> None:
        log.info("domain event %s (%s) of %s: %s", event.change.value, event.detail, event.domain, action.why)
        if action.everything:
            self._engine.reconcile()
        if action.domain is not None:
            self._engine.reconcile_domain(action.domain)
        if action.refill_vm is not None:
            plugged = self._engine.refill_warm(only_vm=action.refill_vm)
            log.info("VM %s started again: %d fresh warm spare(s) plugged", action.refill_vm, plugged)
