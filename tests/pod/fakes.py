"""Fakes for the pod-lifecycle tests, standing in only where this machine lacks the real thing.

`FakeHost` is a stateful stand-in for the host-side service (leases, idempotent request ids, pools that
run dry, an outage switch and a slow mode) driving a real hot-plug backend (the veth-based SimBackend).
`FakeSysfsKernel` is the guest kernel's reaction to driver writes in a sysfs tree, since vfio-pci cannot
run on this kernel.
"""

from __future__ import annotations

import errno
import itertools
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from contract.errors import ErrorKind
from contract.host_api import GrantedVf, HostCallError, VfRequest
from contract.pci import PciAddress
from host_side.backends.base import Hotplug, VfNetlink, VfRef, VfSettings, lease_alias
from vm_side.sysfs import VFIO_DRIVER, GuestSysfs, SysfsError

VFIO_GROUP_MAJOR = 511  # vfio allocates a dynamic char major; any free number does here
VFIO_MISC = (10, 196)  # /dev/vfio/vfio is misc minor 196
NATIVE_DRIVERS = {("0x8086", "0x154c"): "iavf"}  # vendor/device -> the kernel driver that matches it


def make_pool(pf: str, pf_pci: str, count: int, first_fn: int = 0) -> list[VfRef]:
    base = PciAddress.parse(pf_pci)
    return [
        VfRef(pf, base, i, PciAddress(base.domain, base.bus, 0x10 + (first_fn + i) // 8, (first_fn + i) % 8))
        for i in range(count)
    ]


@dataclass
class Lease:
    lease_id: str
    pod_uid: str
    request_id: str
    vf: VfRef
    pool: str
    grant: GrantedVf


class SimulatedCrash(BaseException):
    """The plugin process dies here: no except-Exception handler runs, nothing is rolled back."""


class FakeHost:
    """Implements contract.host_api.HostApi over a real Hotplug/VfNetlink backend."""

    def __init__(
        self, backend: Hotplug, netlink: VfNetlink, pools: dict[str, list[VfRef]], domain: str = "vm1"
    ):
        self.backend = backend
        self.netlink = netlink
        self.pools = pools
        self.domain = domain
        self.up = True
        self.attach_delay_s = 0.0
        self.calls: list[str] = []
        self.attach_timeouts: list[float] = []
        self.crash_after: set[str] = set()  # calls after which the caller "dies" (the host has committed)
        self.leases: dict[str, Lease] = {}
        self._ids = itertools.count(1)
        self._lock = threading.Lock()

    def _check_up(self, what: str) -> None:
        self.calls.append(what)
        if not self.up:
            raise HostCallError(ErrorKind.UNAVAILABLE, "failed to connect to all addresses (host down)")

    def leases_of(self, pod_uid: str) -> list[Lease]:
        return [lease for lease in self.leases.values() if lease.pod_uid == pod_uid]

    def attach(
        self, pod_uid: str, pod_name: str, requests: Sequence[VfRequest], request_id: str, timeout_s: float
    ) -> list[GrantedVf]:
        self._check_up("attach")
        self.attach_timeouts.append(timeout_s)
        with self._lock:
            known = [lease for lease in self.leases.values() if lease.request_id == request_id]
            if known:
                return [lease.grant for lease in known]
            taken = {lease.vf for lease in self.leases.values()}
            picks: list[tuple[int, str, VfRef, VfRequest]] = []
            for index, req in enumerate(requests):
                if req.pool not in self.pools:
                    raise HostCallError(ErrorKind.NOT_FOUND, f"no pool {req.pool!r}")
                free = [
                    vf for vf in self.pools[req.pool] if vf not in taken and vf not in {p[2] for p in picks}
                ]
                if len(free) < req.count:
                    raise HostCallError(
                        ErrorKind.RESOURCE_EXHAUSTED,
                        f"pool {req.pool!r} has {len(free)} free VFs, pod {pod_name} asks {req.count}",
                    )
                picks.extend((index, req.pool, vf, req) for vf in free[: req.count])
            for index, pool, vf, req in picks:
                lease_id = f"L{next(self._ids)}"
                mac = req.mac or f"02:fe:00:00:{vf.pci.slot:02x}:{vf.pci.function:02x}"
                settings = VfSettings(mac=mac, vlan=req.vlan or 0)
                self.netlink.apply_vf(vf, settings)
                plugged = self.backend.attach(self.domain, vf, lease_alias(lease_id), settings, timeout_s)
                grant = GrantedVf(
                    lease_id, pool, vf.pci, plugged.guest_pci, mac, req.vlan or 0, req.numa, index
                )
                self.leases[lease_id] = Lease(lease_id, pod_uid, request_id, vf, pool, grant)
        if self.attach_delay_s:
            # A slow host keeps working after the caller gave up: the leases stay taken.
            time.sleep(min(self.attach_delay_s, max(timeout_s, 0)))
            if self.attach_delay_s > timeout_s:
                raise HostCallError(
                    ErrorKind.DEADLINE_EXCEEDED, f"attach for {pod_name} took over {timeout_s:.2f}s"
                )
        if "attach" in self.crash_after:
            raise SimulatedCrash("after attach")
        return [lease.grant for lease in self.leases.values() if lease.request_id == request_id]

    def release(self, pod_uid: str, request_id: str, timeout_s: float) -> None:
        self._check_up("release")
        with self._lock:
            for lease in self.leases_of(pod_uid):
                self.backend.detach(self.domain, lease_alias(lease.lease_id), timeout_s)
                del self.leases[lease.lease_id]
        if "release" in self.crash_after:
            raise SimulatedCrash("after release")

    def sync(self, live_pod_uids: Sequence[str], timeout_s: float) -> None:
        self._check_up("sync")
        for uid in {lease.pod_uid for lease in self.leases.values()} - set(live_pod_uids):
            self.release(uid, f"sync/{uid}", timeout_s)


class FakeSysfsKernel(GuestSysfs):
    """A sysfs tree that reacts to driver writes like the kernel: `unbind`, `bind`, `drivers_probe` and
    `driver_override` move the `driver` symlink, the netdev folder and vfio's group device."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        for drv in ("iavf", VFIO_DRIVER):
            (root / "bus/pci/drivers" / drv).mkdir(parents=True, exist_ok=True)
        misc = root / "class/misc/vfio"
        misc.mkdir(parents=True, exist_ok=True)
        (misc / "dev").write_text(f"{VFIO_MISC[0]}:{VFIO_MISC[1]}\n")
        self.netdev_names: dict[str, list[str]] = {}  # BDF -> netdevs to restore when iavf binds again
        self.writes: list[tuple[str, str]] = []

    def write(self, rel: str, text: str) -> None:
        self.writes.append((rel, text))
        parts = rel.split("/")
        if rel == "bus/pci/drivers_probe":
            self._probe(PciAddress.parse(text))
        elif parts[:3] == ["bus", "pci", "drivers"] and parts[4] in ("bind", "unbind"):
            pci = PciAddress.parse(text)
            if parts[4] == "unbind":
                if self.driver(pci) != parts[3]:
                    raise SysfsError(errno.ENODEV, f"unbind {pci}: not bound to {parts[3]}")
                self._unbind(pci)
            else:
                if self.driver(pci) is not None:
                    raise SysfsError(errno.EBUSY, f"bind {pci}: already bound")
                if self._match(pci) != parts[3]:
                    raise SysfsError(errno.ENODEV, f"bind {pci}: {parts[3]} does not match it")
                self._bind(pci, parts[3])
        elif parts[-1] == "driver_override":
            value = text.strip()
            (self.root / rel).write_text(f"{value or '(null)'}\n")
        else:
            super().write(rel, text)

    def _devdir(self, pci: PciAddress) -> Path:
        return self.root / "bus/pci/devices" / str(pci)

    def _match(self, pci: PciAddress) -> str | None:
        override = (self._devdir(pci) / "driver_override").read_text().strip()
        if override != "(null)":
            return override
        ids = tuple((self._devdir(pci) / f).read_text().strip() for f in ("vendor", "device"))
        return NATIVE_DRIVERS.get((ids[0], ids[1]))

    def _probe(self, pci: PciAddress) -> None:
        drv = self._match(pci)
        if self.driver(pci) is None and drv is not None and self.driver_loaded(drv):
            self._bind(pci, drv)

    def _bind(self, pci: PciAddress, drv: str) -> None:
        dev = self._devdir(pci)
        if drv == VFIO_DRIVER:
            group = self.iommu_group(pci)
            if group is None:
                return  # vfio-pci's probe fails without an IOMMU group: the device stays unbound
            gdir = self.root / "class/vfio" / group
            gdir.mkdir(parents=True, exist_ok=True)
            (gdir / "dev").write_text(f"{VFIO_GROUP_MAJOR}:{int(group.removeprefix('noiommu-'))}\n")
        else:
            for name in self.netdev_names.pop(str(pci), []):
                (dev / "net" / name).mkdir(parents=True, exist_ok=True)
        (dev / "driver").symlink_to(f"../../drivers/{drv}")
        (self.root / "bus/pci/drivers" / drv / str(pci)).symlink_to(f"../../devices/{pci}")

    def _unbind(self, pci: PciAddress) -> None:
        dev = self._devdir(pci)
        drv = self.driver(pci)
        (dev / "driver").unlink()
        (self.root / "bus/pci/drivers" / str(drv) / str(pci)).unlink()
        if drv == VFIO_DRIVER:
            group = self.iommu_group(pci)
            if group is not None:
                for f in (self.root / "class/vfio" / group).glob("*"):
                    f.unlink()
                (self.root / "class/vfio" / group).rmdir()
        elif (dev / "net").is_dir():
            self.netdev_names[str(pci)] = self.netdevs(pci)
            for d in (dev / "net").iterdir():
                for f in d.iterdir():
                    f.unlink()
                d.rmdir()
            (dev / "net").rmdir()
