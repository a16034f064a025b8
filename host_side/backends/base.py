"""The contract between the lease engine and the systems it drives on the hypervisor.

The lease engine (pure policy + SQLite) decides; a `VfNetlink` configures a VF on its PF and a `Hotplug`
puts a device into a libvirt domain and takes it out again. Production uses pyroute2 and libvirt; the
`emulated-nic` hot-plug backend (labs and CI only) and test fakes implement the same protocols.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from typing import Protocol, runtime_checkable

from contract.pci import PciAddress

# Hears (phase name, seconds) of each timed step, for the metrics.
Observe = Callable[[str, float], None]

# Every device we plug carries a libvirt user alias with this prefix, naming its lease; reconcile
# finds our devices in the live domain XML by it. libvirt requires user aliases to start with "ua-".
ALIAS_PREFIX = "ua-vfhp-"


def lease_alias(lease_id: str) -> str:
    return f"{ALIAS_PREFIX}{lease_id}"


@dataclass(frozen=True)
class VfRef:
    """One VF of the inventory: its PF (netdev name and PCI address), its index and PCI address."""

    pf: str
    pf_pci: PciAddress
    index: int
    pci: PciAddress


@dataclass(frozen=True)
class VfSettings:
    """The L2 settings a PF holds for one VF (as `ip link show` reports them)."""

    mac: str
    vlan: int = 0
    qos: int = 0
    spoofchk: bool | None = None
    trust: bool | None = None
    min_tx_rate_mbps: int = 0
    max_tx_rate_mbps: int = 0
    link_state: str = "auto"  # auto | enable | disable


@dataclass(frozen=True)
class PluggedDevice:
    """A device present in a domain's live XML under one of our aliases."""

    alias: str
    guest_pci: PciAddress | None
    mac: str | None = None


class VfNetlink(Protocol):
    def read_vf(self, vf: VfRef) -> VfSettings:
        """The VF's settings as its PF reports them. Raises NotFound when the PF or the VF is gone."""
        ...

    def apply_vf(self, vf: VfRef, settings: VfSettings) -> None:
        """Makes the PF hold `settings` for the VF, changing only what differs (idempotent);
        spoofchk/trust None leave the current value. Raises InvalidRequest for a value no VF can take,
        PreconditionFailed when the PF driver does not support a changed setting."""
        ...


class Hotplug(Protocol):
    def domain_running(self, domain: str) -> bool:
        """True when the domain (libvirt name or UUID) exists and is active, running or paused."""
        ...

    def attach(
        self, domain: str, vf: VfRef, alias: str, settings: VfSettings, timeout_s: float
    ) -> PluggedDevice:
        """Plug `vf` into `domain` on a free pcie-root-port; returns once DEVICE_ADDED arrived (or the alias
        is in the live XML), with the guest PCI address read from the live XML. Idempotent: an alias
        already plugged returns its device without a second call.

        Raises PreconditionFailed (VM not running or unknown, no free root port, host without IOMMU, VF in
        use), BackendUnavailable (libvirtd unreachable), DeadlineExceeded (no DEVICE_ADDED in time)."""
        ...

    def detach(self, domain: str, alias: str, timeout_s: float) -> None:
        """Unplug; returns only when DEVICE_REMOVED arrived or the alias left the live XML (at once when
        the alias is not plugged or the domain no longer exists).

        Raises DeadlineExceeded when the guest holds the device past the timeout (e.g. paused), and
        PreconditionFailed on DEVICE_REMOVAL_FAILED (the guest refused); the device is then still
        plugged: quarantine, never free."""
        ...

    def live_devices(self, domain: str) -> dict[str, PluggedDevice]:
        """Our devices (alias starts with ALIAS_PREFIX) in the domain's live XML, by alias."""
        ...


class DomainChange(Enum):
    """What libvirt reported about a whole domain (lifecycle and reboot events), or about the connection."""

    STARTED = "started"
    STOPPED = "stopped"  # destroyed, shut down, crashed (on_crash=destroy), migrated or saved away
    SHUTDOWN = "shutdown"  # the guest finished shutting down; STOPPED follows once QEMU exits
    CRASHED = "crashed"  # the guest panicked; with on_crash=preserve QEMU (and the devices) stay
    UNDEFINED = "undefined"
    REBOOTED = "rebooted"  # the guest reset; hot-plugged devices stay in the machine
    OTHER = "other"  # suspended, resumed, defined, ...: nothing to do for the leases
    RECONNECTED = "reconnected"  # the connection to libvirtd was lost and is open again; events were missed


@dataclass(frozen=True)
class DomainEvent:
    """One domain-level event as the backend received it; `domain` and `uuid` are empty for RECONNECTED."""

    change: DomainChange
    domain: str = ""
    uuid: str = ""
    detail: str = ""


DomainListener = Callable[[DomainEvent], None]


@runtime_checkable
class DomainEventSource(Protocol):
    def watch_domains(self, listener: DomainListener) -> None:
        """Calls `listener` for every domain event from now on, and after each reconnect to libvirtd.

        The listener runs on libvirt's event-loop thread: it must only queue the event, never block."""
        ...
