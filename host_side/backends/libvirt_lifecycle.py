"""libvirt's domain lifecycle and reboot events, and the connection's close callback, for one connection.

The callbacks run on libvirt's event-loop thread, so they only turn libvirt's numbers into a
`DomainEvent` and hand it to the listener (which queues it). Keepalive makes a hung libvirtd look like a
closed connection too, so the close callback is the one signal that the connection must be reopened.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

import libvirt

from contract.errors import HostSideError
from host_side.backends.base import DomainChange, DomainEvent, DomainListener

log = logging.getLogger(__name__)

# A libvirtd that answers no keepalive for 5 s x 3 is treated as gone.
_KEEPALIVE_INTERVAL_S = 5
_KEEPALIVE_COUNT = 3

_CHANGES = {
    libvirt.VIR_DOMAIN_EVENT_STARTED: DomainChange.STARTED,
    libvirt.VIR_DOMAIN_EVENT_STOPPED: DomainChange.STOPPED,
    libvirt.VIR_DOMAIN_EVENT_SHUTDOWN: DomainChange.SHUTDOWN,
    libvirt.VIR_DOMAIN_EVENT_CRASHED: DomainChange.CRASHED,
    libvirt.VIR_DOMAIN_EVENT_UNDEFINED: DomainChange.UNDEFINED,
}

# Why a domain stopped, as libvirt's VIR_DOMAIN_EVENT_STOPPED_* details name it.
_STOPPED_DETAILS = {
    libvirt.VIR_DOMAIN_EVENT_STOPPED_SHUTDOWN: "shutdown",
    libvirt.VIR_DOMAIN_EVENT_STOPPED_DESTROYED: "destroyed",
    libvirt.VIR_DOMAIN_EVENT_STOPPED_CRASHED: "crashed",
    libvirt.VIR_DOMAIN_EVENT_STOPPED_MIGRATED: "migrated",
    libvirt.VIR_DOMAIN_EVENT_STOPPED_SAVED: "saved",
    libvirt.VIR_DOMAIN_EVENT_STOPPED_FAILED: "failed",
    libvirt.VIR_DOMAIN_EVENT_STOPPED_FROM_SNAPSHOT: "from snapshot",
}


def lifecycle_event(name: str, uuid: str, event: int, detail: int) -> DomainEvent:
    """The record of one VIR_DOMAIN_EVENT_ID_LIFECYCLE callback."""
    change = _CHANGES.get(event, DomainChange.OTHER)
    if change is DomainChange.STOPPED:
        text = _STOPPED_DETAILS.get(detail, f"detail {detail}")
    else:
        text = f"event {event} detail {detail}"
    return DomainEvent(change, domain=name, uuid=uuid, detail=text)


class LifecycleEvents:
    """Lifecycle, reboot and close callbacks on `conn`; `close()` deregisters them."""

    def __init__(
        self, conn: libvirt.virConnect, listener: DomainListener, on_close: Callable[[], None]
    ) -> None:
        self._conn = conn
        self._listener = listener
        self._on_close = on_close
        self._callback_ids = [
            conn.domainEventRegisterAny(None, libvirt.VIR_DOMAIN_EVENT_ID_LIFECYCLE, self._lifecycle, None),
            conn.domainEventRegisterAny(None, libvirt.VIR_DOMAIN_EVENT_ID_REBOOT, self._reboot, None),
        ]
        conn.registerCloseCallback(self._closed, None)
        conn.setKeepAlive(_KEEPALIVE_INTERVAL_S, _KEEPALIVE_COUNT)

    def _lifecycle(self, _conn: Any, dom: Any, event: int, detail: int, _opaque: Any) -> None:
        self._listener(lifecycle_event(dom.name(), dom.UUIDString(), event, detail))

    def _reboot(self, _conn: Any, dom: Any, _opaque: Any) -> None:
        self._listener(DomainEvent(DomainChange.REBOOTED, domain=dom.name(), uuid=dom.UUIDString()))

    def _closed(self, _conn: Any, reason: int, _opaque: Any) -> None:
        log.warning("libvirt connection closed (reason %d); reconnecting", reason)
        self._on_close()

    def close(self) -> None:
        for callback_id in self._callback_ids:
            try:
                self._conn.domainEventDeregisterAny(callback_id)
            except libvirt.libvirtError as e:
                log.debug("deregistering libvirt lifecycle callback %d: %s", callback_id, e)
        self._callback_ids = []
        try:
            self._conn.unregisterCloseCallback()
        except libvirt.libvirtError as e:
            log.debug("unregistering libvirt close callback: %s", e)


class Reconnector:
    """Reopens a closed connection in the background, with backoff, until `reopen()` stops raising."""

    def __init__(self, reopen: Callable[[], object], *, first_s: float = 0.25, max_s: float = 8.0) -> None:
        self._reopen = reopen
        self._first_s = first_s
        self._max_s = max_s
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="libvirt-reconnect", daemon=True)
        self._thread.start()

    def kick(self) -> None:
        """The connection closed (called from the close callback: does not block)."""
        self._wake.set()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        self._thread.join(5)

    def _run(self) -> None:
        while True:
            self._wake.wait()
            self._wake.clear()
            delay, attempt = self._first_s, 1
            while not self._stop.wait(delay):
                try:
                    self._reopen()
                except HostSideError as e:
                    log.warning("libvirt reconnect attempt %d failed, next in %.2f s: %s", attempt, delay, e)
                    delay, attempt = min(delay * 2, self._max_s), attempt + 1
                    continue
                log.info("libvirt connection reopened after %d attempt(s)", attempt)
                break
            if self._stop.is_set():
                return
