"""`Hotplug` over libvirt: puts a VF (or, in labs, an emulated NIC) into a running domain and takes it out.

The protocol (shared notes "libvirt-qemu-lab", style §11): pick a free pcie-root-port explicitly, arm the
device-event waiter before the call, treat attach as done on DEVICE_ADDED and detach only on DEVICE_REMOVED
or the alias gone from the live XML (libvirt's detach returns before the guest lets go, and a paused guest
holds the device). Only LIVE state is touched: a lease never survives a VM restart in the domain config.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any, TypeVar

import libvirt

from contract.errors import (
    BackendUnavailable,
    ConfigError,
    DeadlineExceeded,
    HostSideError,
    NotFound,
    PreconditionFailed,
)
from host_side.backends.base import (
    DomainChange,
    DomainEvent,
    DomainListener,
    Observe,
    PluggedDevice,
    VfRef,
    VfSettings,
)
from host_side.backends.libvirt_errors import LibvirtFailure, route_libvirt_errors_to_logging, translate
from host_side.backends.libvirt_events import DeviceEvent, DeviceEvents, Waiter, ensure_event_loop
from host_side.backends.libvirt_lifecycle import LifecycleEvents, Reconnector
from host_side.backends.libvirt_xml import (
    EMULATED_NIC_MODELS,
    HotplugMode,
    device_xml,
    free_root_port,
    plugged_devices,
    root_ports,
)

log = logging.getLogger(__name__)

T = TypeVar("T")

# While waiting for an event, re-read the live XML this often: an event can be lost when the connection
# drops, and the live XML is the truth either way.
_XML_RECHECK_S = 0.5


class LibvirtHotplug:
    """One libvirt connection (reopened when it breaks) that hot-plugs devices into domains."""

    def __init__(
        self, uri: str, *, mode: str, nic_model: str = "e1000e", observe: Observe | None = None
    ) -> None:
        try:
            self._mode = HotplugMode(mode)
        except ValueError:
            choices = ", ".join(m.value for m in HotplugMode)
            raise ConfigError(f"libvirt hot-plug mode {mode!r} is unknown; use one of: {choices}") from None
        if self._mode is HotplugMode.EMULATED_NIC and nic_model not in EMULATED_NIC_MODELS:
            raise ConfigError(
                f"emulated-nic model {nic_model!r} is unknown; use one of: {', '.join(EMULATED_NIC_MODELS)}"
            )
        self._uri = uri
        self._nic_model = nic_model
        self._observe = observe
        self._lock = threading.Lock()
        self._conn: Any = None
        self._events: DeviceEvents | None = None
        # Domain events (watch_domains): the listener, its callbacks on the open connection, and the
        # thread that reopens a closed connection so they keep coming.
        self._listener: DomainListener | None = None
        self._lifecycle: LifecycleEvents | None = None
        self._reconnector: Reconnector | None = None
        self._opened_before = False
        # Root-port choice and the attach call are serialised per domain, so two leases never pick one port.
        self._domain_locks: dict[str, threading.Lock] = {}

    # -- connection -------------------------------------------------------------------------------------

    def _connection(self) -> tuple[Any, DeviceEvents]:
        with self._lock:
            if self._conn is not None and self._events is not None:
                if self._conn.isAlive():
                    return self._conn, self._events
                log.warning("libvirt connection to %s broke; reconnecting", self._uri)
                self._drop_locked()
            ensure_event_loop()
            route_libvirt_errors_to_logging()
            try:
                conn = libvirt.open(self._uri)
            except libvirt.libvirtError as e:
                raise translate(
                    LibvirtFailure.of(e), action="connect to libvirtd", vm=None, uri=self._uri
                ) from e
            self._conn, self._events = conn, DeviceEvents(conn)
            if self._listener is not None:
                self._lifecycle = LifecycleEvents(conn, self._listener, self._kick)
                if self._opened_before:
                    self._listener(DomainEvent(DomainChange.RECONNECTED))
            self._opened_before = True
            return conn, self._events

    def _kick(self) -> None:
        if self._reconnector is not None:
            self._reconnector.kick()

    def watch_domains(self, listener: DomainListener) -> None:
        """DomainEventSource: lifecycle and reboot events from now on, RECONNECTED after each reconnect."""
        with self._lock:
            self._listener = listener
            if self._reconnector is None:
                self._reconnector = Reconnector(self._connection)
            if self._conn is not None and self._lifecycle is None:
                self._lifecycle = LifecycleEvents(self._conn, listener, self._kick)
        try:
            self._connection()
        except BackendUnavailable as e:
            log.warning("libvirt domain events not yet watched: %s; retrying in the background", e)
            self._kick()

    def _drop_locked(self) -> None:
        if self._lifecycle is not None:
            self._lifecycle.close()
            self._lifecycle = None
        if self._events is not None:
            self._events.close()
        if self._conn is not None:
            try:
                self._conn.close()
            except libvirt.libvirtError as e:
                log.debug("closing broken libvirt connection: %s", e)
        self._conn, self._events = None, None

    def close(self) -> None:
        """Drops the connection (the next call reopens it); domain events stay watched."""
        with self._lock:
            self._drop_locked()

    def shutdown(self) -> None:
        """Drops the connection and stops watching domain events for good."""
        with self._lock:
            self._listener = None
            reconnector, self._reconnector = self._reconnector, None
            self._drop_locked()
        if reconnector is not None:
            reconnector.stop()

    def _call(self, action: str, vm: str, fn: Callable[..., T], *args: Any) -> T:
        """Runs one libvirt call; its error is translated once, here."""
        try:
            return fn(*args)
        except libvirt.libvirtError as e:
            err = translate(LibvirtFailure.of(e), action=action, vm=vm, uri=self._uri)
            if isinstance(err, BackendUnavailable):
                self.close()
                self._kick()  # the close callback, deregistered by close(), may not have fired yet
            raise err from e

    def _lookup(self, vm: str) -> Any:
        conn, _ = self._connection()
        try:
            uuid.UUID(vm)
        except ValueError:
            return self._call("lookup", vm, conn.lookupByName, vm)
        return self._call("lookup", vm, conn.lookupByUUIDString, vm)

    def _domain_lock(self, vm: str) -> threading.Lock:
        with self._lock:
            return self._domain_locks.setdefault(vm, threading.Lock())

    def _timed(self, phase: str, fn: Callable[[], T]) -> T:
        t0 = time.monotonic()
        try:
            return fn()
        finally:
            if self._observe is not None:
                self._observe(phase, time.monotonic() - t0)

    # -- Hotplug protocol -------------------------------------------------------------------------------

    def domain_running(self, domain: str) -> bool:
        """True when the domain exists and is active (running or paused)."""
        try:
            dom = self._lookup(domain)
        except PreconditionFailed:
            return False
        return bool(self._call("state check", domain, dom.isActive))

    def live_devices(self, domain: str) -> dict[str, PluggedDevice]:
        dom = self._lookup(domain)
        return plugged_devices(self._call("read live XML", domain, dom.XMLDesc, 0))

    def attach(
        self, domain: str, vf: VfRef, alias: str, settings: VfSettings, timeout_s: float
    ) -> PluggedDevice:
        deadline = time.monotonic() + timeout_s
        action = f"attach of VF {vf.pci} ({alias}, {self._mode.value})"
        dom = self._lookup(domain)
        _, events = self._connection()
        with events.expect(dom.UUIDString(), alias) as waiter:
            with self._domain_lock(domain):
                live = self._call(action, domain, dom.XMLDesc, 0)
                if (existing := plugged_devices(live).get(alias)) is not None:
                    log.info("%s: already in VM %s at guest %s", action, domain, existing.guest_pci)
                    return existing
                if not self._call(action, domain, dom.isActive):
                    raise PreconditionFailed(f"{action}: VM {domain} is not running; start it, then retry")
                port = free_root_port(live)
                if port is None:
                    ports = len(root_ports(live))
                    state = (
                        f"all {ports} of its pcie-root-ports are in use"
                        if ports
                        else "it has no pcie-root-port"
                    )
                    raise PreconditionFailed(
                        f"{action}: VM {domain} cannot take another device, {state}; the VM needs spare "
                        "pcie-root-ports: add <controller type='pci' model='pcie-root-port'/> to its domain "
                        "XML (one per hot-plugged device) and restart it"
                    )
                xml = device_xml(
                    self._mode,
                    vf_pci=vf.pci,
                    alias=alias,
                    settings=settings,
                    port_index=port,
                    nic_model=self._nic_model,
                )
                log.debug("%s: VM %s, root port %d: %s", action, domain, port, xml)
                self._timed(
                    "libvirt_call",
                    lambda: self._call(
                        action, domain, dom.attachDeviceFlags, xml, libvirt.VIR_DOMAIN_AFFECT_LIVE
                    ),
                )
            self._timed("event_wait", lambda: self._wait(domain, alias, waiter, deadline, present=True))
        device = self.live_devices(domain).get(alias)
        if device is None:
            raise HostSideError(f"{action}: VM {domain} reported the device added but it left again")
        log.info("%s: VM %s has it at guest %s", action, domain, device.guest_pci)
        return device

    def detach(self, domain: str, alias: str, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        action = f"detach of {alias}"
        try:
            dom = self._lookup(domain)
        except PreconditionFailed:
            # libvirt says the domain does not exist, so nothing of it holds the device any more.
            log.info("%s: VM %s no longer exists; device gone with it", action, domain)
            return
        _, events = self._connection()
        with events.expect(dom.UUIDString(), alias) as waiter:
            if alias not in plugged_devices(self._call(action, domain, dom.XMLDesc, 0)):
                log.info("%s: not in VM %s; already detached", action, domain)
                return
            try:
                # Asynchronous by design: returns once QEMU was asked; the guest decides when it lets go.
                self._timed(
                    "libvirt_call",
                    lambda: self._call(
                        action, domain, dom.detachDeviceAlias, alias, libvirt.VIR_DOMAIN_AFFECT_LIVE
                    ),
                )
            except NotFound:
                log.info("%s: libvirt no longer has it in VM %s", action, domain)
            self._timed("event_wait", lambda: self._wait(domain, alias, waiter, deadline, present=False))
        log.info("%s: VM %s released it", action, domain)

    def _wait(self, domain: str, alias: str, waiter: Waiter, deadline: float, *, present: bool) -> None:
        """Waits for DEVICE_ADDED (present) or DEVICE_REMOVED (not present), or the live XML saying so."""
        done = DeviceEvent.ADDED if present else DeviceEvent.REMOVED
        while (remaining := deadline - time.monotonic()) > 0:
            event = waiter.wait(min(remaining, _XML_RECHECK_S))
            if event is done:
                return
            if event is DeviceEvent.REMOVAL_FAILED and not present:
                raise PreconditionFailed(
                    f"VM {domain} refused to release {alias} (DEVICE_REMOVAL_FAILED); the device stays in "
                    "the VM: stop what uses it in the guest, then release again"
                )
            if event is None and (alias in self.live_devices(domain)) == present:
                return
        state = "appear in" if present else "leave"
        raise DeadlineExceeded(
            f"{alias} did not {state} VM {domain} in time (no DEVICE_{'ADDED' if present else 'REMOVED'}); "
            "the guest may be paused or hold the device: the lease must be quarantined and reconciled"
        )
