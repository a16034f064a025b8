"""Stateful fakes of libvirt hot-plug and PF netlink (no SR-IOV hardware or VFIO here).

They keep the state the real systems keep and refuse what they refuse, with libvirt's real error codes
(shared notes, libvirt-qemu-lab §7) turned into host-side errors the way host_side.backends.libvirt_errors does:
3/55/67/38 -> FAILED_PRECONDITION, 99 -> gone, connection loss -> UNAVAILABLE, 27 -> INTERNAL.
With a `state` file they survive a kill -9 of the process that uses them (the crash tests).
"""

from __future__ import annotations

import json
import os
import threading
from dataclasses import asdict, dataclass, field
from pathlib import Path

from contract.errors import BackendUnavailable, DeadlineExceeded, HostSideError, PreconditionFailed
from contract.pci import PciAddress
from host_side.backends.base import ALIAS_PREFIX, PluggedDevice, VfRef, VfSettings

VIR_ERR_NO_SUPPORT = 3
VIR_ERR_XML_ERROR = 27
VIR_ERR_SYSTEM_ERROR = 38
VIR_ERR_OPERATION_INVALID = 55
VIR_ERR_CONFIG_UNSUPPORTED = 67
VIR_ERR_DEVICE_MISSING = 99


def libvirt_error(code: int, message: str) -> HostSideError:
    """The host-side error the libvirt adapter raises for libvirt error `code`."""
    text = f"libvirt error {code}: {message}"
    if code in (
        VIR_ERR_NO_SUPPORT,
        VIR_ERR_SYSTEM_ERROR,
        VIR_ERR_OPERATION_INVALID,
        VIR_ERR_CONFIG_UNSUPPORTED,
    ):
        return PreconditionFailed(text)
    return HostSideError(text)


@dataclass
class FakeDomain:
    running: bool = True
    paused: bool = False
    root_ports: int = 8
    iommu: bool = True
    devices: dict[str, dict[str, str]] = field(default_factory=dict)  # alias -> vf, mac, guest_pci
    detach_pending: list[str] = field(default_factory=list)  # asked while paused: done on resume


class _Persisted:
    def __init__(self, state: Path | None) -> None:
        self._state = state
        self._lock = threading.RLock()

    def _save(self, data: object) -> None:
        if self._state is None:
            return
        tmp = self._state.with_suffix(".tmp")
        tmp.write_text(json.dumps(data))
        os.replace(tmp, self._state)

    def _load(self) -> object | None:
        if self._state is None or not self._state.exists():
            return None
        data: object = json.loads(self._state.read_text())
        return data


class FakeHotplug(_Persisted):
    """Domains with pcie-root-ports, live devices by alias, pause/resume, and libvirt's refusals."""

    def __init__(self, domains: dict[str, FakeDomain] | None = None, *, state: Path | None = None) -> None:
        super().__init__(state)
        loaded = self._load()
        if isinstance(loaded, dict):
            self.domains: dict[str, FakeDomain] = {name: FakeDomain(**d) for name, d in loaded.items()}
        else:
            self.domains = domains or {}
            self._persist()
        self.libvirt_down = False
        self.attach_error: HostSideError | None = None  # raised by the next attach (after nothing changed)
        self.attach_hangs = False  # next attach: QEMU takes the device but no event comes in time
        self.attach_calls = 0
        self.refuse_detach = False  # the guest answers the unplug with DEVICE_REMOVAL_FAILED
        # When set: attach signals `attach_entered` and waits for `attach_gate` (a slow QEMU/guest).
        self.attach_gate: threading.Event | None = None
        self.attach_entered = threading.Event()

    def _persist(self) -> None:
        self._save({name: asdict(d) for name, d in self.domains.items()})

    def _reachable(self) -> None:
        if self.libvirt_down:
            raise BackendUnavailable(
                f"libvirt error {VIR_ERR_SYSTEM_ERROR}: Failed to connect socket to "
                "'/var/run/libvirt/libvirt-sock': Connection refused; start libvirtd"
            )

    def domain_running(self, domain: str) -> bool:
        with self._lock:
            self._reachable()
            d = self.domains.get(domain)
            return d is not None and d.running

    def _where(self, pci: PciAddress) -> str | None:
        for name, d in self.domains.items():
            if any(dev["vf"] == str(pci) for dev in d.devices.values()):
                return name
        return None

    def attach(
        self, domain: str, vf: VfRef, alias: str, settings: VfSettings, timeout_s: float
    ) -> PluggedDevice:
        if self.attach_gate is not None:
            self.attach_entered.set()
            self.attach_gate.wait(timeout_s)
        with self._lock:
            self._reachable()
            self.attach_calls += 1
            if not alias.startswith(ALIAS_PREFIX):
                raise libvirt_error(VIR_ERR_XML_ERROR, f"bad alias {alias!r}")
            d = self.domains.get(domain)
            if d is None or not d.running:
                raise libvirt_error(VIR_ERR_OPERATION_INVALID, "domain is not running")
            if alias in d.devices:
                return self._plugged(alias, d.devices[alias])
            if self.attach_error is not None:
                err, self.attach_error = self.attach_error, None
                raise err
            if not d.iommu:
                raise libvirt_error(
                    VIR_ERR_CONFIG_UNSUPPORTED, "host doesn't support passthrough of host PCI devices"
                )
            holder = self._where(vf.pci)
            if holder is not None:
                raise libvirt_error(
                    VIR_ERR_OPERATION_INVALID,
                    f"PCI device {vf.pci} is in use by driver QEMU, domain {holder}",
                )
            used = {PciAddress.parse(dev["guest_pci"]).bus for dev in d.devices.values()}
            free = [bus for bus in range(1, d.root_ports + 1) if bus not in used]
            if not free:
                raise PreconditionFailed(
                    f"VM {domain} has no free pcie-root-port; the VM needs spare root ports"
                )
            dev = {"vf": str(vf.pci), "mac": settings.mac, "guest_pci": str(PciAddress(0, free[0], 0, 0))}
            d.devices[alias] = dev
            self._persist()
            if self.attach_hangs:
                self.attach_hangs = False
                raise DeadlineExceeded(f"{alias} did not appear in VM {domain} in time (no DEVICE_ADDED)")
            return self._plugged(alias, dev)

    @staticmethod
    def _plugged(alias: str, dev: dict[str, str]) -> PluggedDevice:
        return PluggedDevice(alias=alias, guest_pci=PciAddress.parse(dev["guest_pci"]), mac=dev["mac"])

    def detach(self, domain: str, alias: str, timeout_s: float) -> None:
        with self._lock:
            self._reachable()
            d = self.domains.get(domain)
            if d is None or alias not in d.devices:
                return  # libvirt 99 (device missing) / no domain: the device is gone
            if self.refuse_detach:
                raise PreconditionFailed(
                    f"VM {domain} refused to release {alias} (DEVICE_REMOVAL_FAILED); the device stays"
                )
            if d.paused:
                # QEMU asks the guest, which does not answer while paused: DEVICE_REMOVED comes on resume.
                if alias not in d.detach_pending:
                    d.detach_pending.append(alias)
                self._persist()
                raise DeadlineExceeded(f"{alias} did not leave VM {domain} in time (no DEVICE_REMOVED)")
            del d.devices[alias]
            self._persist()

    def live_devices(self, domain: str) -> dict[str, PluggedDevice]:
        with self._lock:
            self._reachable()
            d = self.domains.get(domain)
            if d is None or not d.running:
                raise libvirt_error(VIR_ERR_OPERATION_INVALID, "domain is not running")
            return {alias: self._plugged(alias, dev) for alias, dev in d.devices.items()}

    # -- what a test does to the VM ---------------------------------------------------------------

    def pause(self, domain: str) -> None:
        with self._lock:
            self.domains[domain].paused = True
            self._persist()

    def resume(self, domain: str) -> None:
        with self._lock:
            d = self.domains[domain]
            d.paused = False
            for alias in d.detach_pending:
                d.devices.pop(alias, None)
            d.detach_pending.clear()
            self._persist()

    def shut_off(self, domain: str) -> None:
        """A stopped domain loses its hot-plugged devices (they were live only)."""
        with self._lock:
            d = self.domains[domain]
            d.running, d.devices, d.detach_pending = False, {}, []
            self._persist()

    def plugged_vfs(self) -> dict[str, tuple[str, str]]:
        """VF PCI -> (domain, alias) over all domains."""
        with self._lock:
            return {
                dev["vf"]: (name, alias)
                for name, d in self.domains.items()
                for alias, dev in d.devices.items()
            }


class FakeVfNetlink(_Persisted):
    """The PF's per-VF settings as the kernel keeps them; refuses what `ip link set vf` refuses."""

    FACTORY_MAC = "00:00:00:00:00:00"

    def __init__(self, *, state: Path | None = None) -> None:
        super().__init__(state)
        loaded = self._load()
        self.vfs: dict[str, VfSettings] = (
            {pci: VfSettings(**s) for pci, s in loaded.items()} if isinstance(loaded, dict) else {}
        )
        self.fail_apply: HostSideError | None = None

    def read_vf(self, vf: VfRef) -> VfSettings:
        with self._lock:
            return self.vfs.get(str(vf.pci), VfSettings(mac=self.FACTORY_MAC, spoofchk=True, trust=False))

    def apply_vf(self, vf: VfRef, settings: VfSettings) -> None:
        with self._lock:
            if self.fail_apply is not None:
                err, self.fail_apply = self.fail_apply, None
                raise err
            if not 0 <= settings.vlan <= 4094 or (settings.qos and not settings.vlan):
                raise HostSideError(f"set vf {vf.index} on {vf.pf}: Invalid argument (EINVAL)")
            self.vfs[str(vf.pci)] = settings
            self._save({pci: asdict(s) for pci, s in self.vfs.items()})
