"""libvirt device events (DEVICE_ADDED / DEVICE_REMOVED / DEVICE_REMOVAL_FAILED) routed to waiters.

libvirt delivers events only through an event loop registered before the connection is opened; one
process-wide loop thread serves every connection. A waiter is armed for (domain UUID, alias) *before* the
attach or detach call, so an event that arrives while the call is still returning is not lost.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from enum import Enum
from typing import Any

import libvirt

log = logging.getLogger(__name__)

_loop_lock = threading.Lock()
_loop_thread: threading.Thread | None = None


def _run_event_loop() -> None:
    while True:
        if libvirt.virEventRunDefaultImpl() < 0:
            log.error("libvirt event loop iteration failed; device events may be late")


def ensure_event_loop() -> None:
    """Registers libvirt's default event loop and starts its thread, once per process."""
    global _loop_thread
    with _loop_lock:
        if _loop_thread is not None:
            return
        libvirt.virEventRegisterDefaultImpl()
        _loop_thread = threading.Thread(target=_run_event_loop, name="libvirt-events", daemon=True)
        _loop_thread.start()


class DeviceEvent(Enum):
    ADDED = libvirt.VIR_DOMAIN_EVENT_ID_DEVICE_ADDED
    REMOVED = libvirt.VIR_DOMAIN_EVENT_ID_DEVICE_REMOVED
    REMOVAL_FAILED = libvirt.VIR_DOMAIN_EVENT_ID_DEVICE_REMOVAL_FAILED


class Waiter:
    """Receives the device events of one (domain, alias) while armed."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._received: list[DeviceEvent] = []

    def deliver(self, event: DeviceEvent) -> None:
        with self._cond:
            self._received.append(event)
            self._cond.notify_all()

    def wait(self, timeout_s: float) -> DeviceEvent | None:
        """The oldest event not yet taken, waiting up to `timeout_s`; None when none arrived."""
        with self._cond:
            if not self._received:
                self._cond.wait(timeout_s)
            return self._received.pop(0) if self._received else None


class DeviceEvents:
    """Device events of one libvirt connection, by (domain UUID, alias). `close()` deregisters."""

    def __init__(self, conn: libvirt.virConnect) -> None:
        self._conn = conn
        self._lock = threading.Lock()
        self._waiters: dict[tuple[str, str], list[Waiter]] = {}
        self._callback_ids = [
            conn.domainEventRegisterAny(None, kind.value, self._on_event, kind) for kind in DeviceEvent
        ]

    def _on_event(self, _conn: Any, dom: Any, alias: str, kind: DeviceEvent) -> None:
        key = (dom.UUIDString(), alias)
        log.debug("libvirt %s for %s on domain %s", kind.name, alias, dom.name())
        with self._lock:
            waiters = tuple(self._waiters.get(key, ()))
        for waiter in waiters:
            waiter.deliver(kind)

    @contextmanager
    def expect(self, domain_uuid: str, alias: str) -> Iterator[Waiter]:
        """Arms a waiter for the device `alias` of the domain; disarmed when the block ends."""
        key = (domain_uuid, alias)
        waiter = Waiter()
        with self._lock:
            self._waiters.setdefault(key, []).append(waiter)
        try:
            yield waiter
        finally:
            with self._lock:
                self._waiters[key].remove(waiter)
                if not self._waiters[key]:
                    del self._waiters[key]

    def close(self) -> None:
        for callback_id in self._callback_ids:
            try:
                self._conn.domainEventDeregisterAny(callback_id)
            except libvirt.libvirtError as e:
                # The connection is already gone (libvirtd stopped): nothing left to deregister.
                log.debug("deregistering libvirt event callback %d: %s", callback_id, e)
        self._callback_ids = []
