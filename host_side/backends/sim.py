"""The CI simulation backend: host and "VM" are the same kernel, so a hot-plugged VF is simulated.

`SimBackend` implements both `Hotplug` and `VfNetlink`. On attach it creates a real veth netdev carrying
the lease's MAC in the netns that plays the guest (its peer stays down beside it, so deleting the peer
removes the pair wherever the VF end went) and writes the VF's PCI device entry into a guest-sysfs tree
that the VM side reads through its injectable root. Detach removes both. State lives in a JSON file next
to the tree, so a restarted backend still knows its devices. Only tests and explicit CI configs build it;
nothing selects it by default.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import threading
from dataclasses import asdict
from pathlib import Path
from typing import Any

from pyroute2 import IPRoute

from contract.errors import PreconditionFailed
from contract.pci import PciAddress
from host_side.backends.base import PluggedDevice, VfRef, VfSettings

log = logging.getLogger(__name__)

SIM_VENDOR = "0x8086"
SIM_DEVICE = "0x154c"  # Intel X710 VF, as iavf binds it
SIM_DRIVER = "iavf"
_FIRST_BUS, _LAST_BUS = 0x10, 0xFE  # one pcie-root-port bus per hot-plugged device, as QEMU lays them out


def netdev_prefix(guest_sysfs_root: Path) -> str:
    """What every netdev name of the simulated guest at `guest_sysfs_root` starts with (the tag of its root)."""
    return "vfsim" + hashlib.sha256(str(guest_sysfs_root.resolve()).encode()).hexdigest()[:3]


class SimBackend:
    def __init__(
        self, guest_sysfs_root: Path, netns: str | None = None, state_file: Path | None = None
    ) -> None:
        self.root = guest_sysfs_root
        self.netns = netns
        self.state_file = state_file or guest_sysfs_root.with_name(guest_sysfs_root.name + ".sim-state.json")
        self._lock = threading.Lock()
        # Netdev names carry a tag of this backend's guest root: two simulated guests on one kernel (two
        # test runs, or a service restarted on another root) never delete each other's "stale" netdevs.
        self._prefix = netdev_prefix(guest_sysfs_root)
        for drv in (SIM_DRIVER, "vfio-pci"):
            (self.root / "bus/pci/drivers" / drv).mkdir(parents=True, exist_ok=True)

    # -- state -------------------------------------------------------------------------------------
    def _load(self) -> dict[str, Any]:
        try:
            state: dict[str, Any] = json.loads(self.state_file.read_text())
        except FileNotFoundError:
            state = {"devices": {}, "vf_settings": {}}
        return state

    def _save(self, state: dict[str, Any]) -> None:
        tmp = self.state_file.with_suffix(".tmp")
        with tmp.open("w") as f:
            json.dump(state, f, indent=1, sort_keys=True)
            f.flush()
            os.fsync(f.fileno())
        tmp.replace(self.state_file)

    def _ipr(self) -> IPRoute:
        if self.netns is None:
            return IPRoute()
        path = self.netns if "/" in self.netns else f"/var/run/netns/{self.netns}"
        return IPRoute(netns=path, flags=0)  # never create the guest netns by accident

    # -- VfNetlink -----------------------------------------------------------------------------------
    def read_vf(self, vf: VfRef) -> VfSettings:
        with self._lock:
            raw = self._load()["vf_settings"].get(str(vf.pci))
        return VfSettings(**raw) if raw else VfSettings(mac="00:00:00:00:00:00")

    def apply_vf(self, vf: VfRef, settings: VfSettings) -> None:
        with self._lock:
            state = self._load()
            state["vf_settings"][str(vf.pci)] = asdict(settings)
            # Like a real PF: a new MAC for a VF already in the guest shows on the guest's netdev (a warm
            # spare claimed by a pod gets the pod's MAC).
            for dev in state["devices"].values():
                if dev["vf"] == str(vf.pci) and dev["mac"] != settings.mac:
                    self._set_guest_mac(dev, settings.mac)
            self._save(state)

    def _set_guest_mac(self, dev: dict[str, str], mac: str) -> None:
        with self._ipr() as ipr:
            idx = ipr.link_lookup(ifname=dev["ifname"])
            if not idx:
                log.warning(
                    "sim: %s is not at home (moved into a pod?); MAC %s not applied", dev["ifname"], mac
                )
                return
            ipr.link("set", index=idx[0], address=mac)
        gdev = self.root / "bus/pci/devices" / dev["guest_pci"] / "net" / dev["ifname"] / "address"
        if gdev.exists():
            gdev.write_text(f"{mac}\n")
        dev["mac"] = mac

    def netdev_name(self, bus: int) -> str:
        """The netdev of the device on guest bus `bus` (its veth peer adds "p"); 15 characters at most."""
        return f"{self._prefix}{bus:02x}"

    # -- Hotplug -------------------------------------------------------------------------------------
    def domain_running(self, domain: str) -> bool:
        return True  # the simulated guest is this machine, always up

    def attach(
        self, domain: str, vf: VfRef, alias: str, settings: VfSettings, timeout_s: float
    ) -> PluggedDevice:
        with self._lock:
            state = self._load()
            if alias in state["devices"]:
                return self._plugged(alias, state["devices"][alias])
            used = {PciAddress.parse(d["guest_pci"]).bus for d in state["devices"].values()}
            free = [b for b in range(_FIRST_BUS, _LAST_BUS + 1) if b not in used]
            if not free:
                raise PreconditionFailed(f"simulated guest {domain}: no free root port for {alias}")
            gpci = PciAddress(0, free[0], 0, 0)
            ifname = self.netdev_name(gpci.bus)
            with self._ipr() as ipr:
                for stale in (ifname, f"{ifname}p"):
                    if idx := ipr.link_lookup(ifname=stale):
                        ipr.link("del", index=idx[0])
                ipr.link(
                    "add", ifname=ifname, kind="veth", peer={"ifname": f"{ifname}p"}, address=settings.mac
                )
            self._write_device(gpci, ifname, settings.mac)
            dev = {
                "domain": domain,
                "guest_pci": str(gpci),
                "mac": settings.mac,
                "ifname": ifname,
                "vf": str(vf.pci),
            }
            state["devices"][alias] = dev
            self._save(state)
        log.info("sim: plugged %s (VF %s) into %s at %s as %s", alias, vf.pci, domain, gpci, ifname)
        return self._plugged(alias, dev)

    def detach(self, domain: str, alias: str, timeout_s: float) -> None:
        with self._lock:
            state = self._load()
            dev = state["devices"].get(alias)
            if dev is None:
                log.info("sim: %s already gone from %s", alias, domain)
                return
            with self._ipr() as ipr:
                # The peer never leaves the guest netns; deleting it deletes the VF end wherever it went.
                if idx := ipr.link_lookup(ifname=f"{dev['ifname']}p"):
                    ipr.link("del", index=idx[0])
            self._remove_device(PciAddress.parse(dev["guest_pci"]))
            del state["devices"][alias]
            self._save(state)
        log.info("sim: unplugged %s from %s (was %s)", alias, domain, dev["guest_pci"])

    def live_devices(self, domain: str) -> dict[str, PluggedDevice]:
        with self._lock:
            devices = self._load()["devices"]
        return {a: self._plugged(a, d) for a, d in devices.items() if d["domain"] == domain}

    @staticmethod
    def _plugged(alias: str, dev: dict[str, str]) -> PluggedDevice:
        return PluggedDevice(alias=alias, guest_pci=PciAddress.parse(dev["guest_pci"]), mac=dev["mac"])

    # -- guest sysfs tree ---------------------------------------------------------------------------
    def _write_device(self, pci: PciAddress, ifname: str, mac: str) -> None:
        dev = self.root / "bus/pci/devices" / str(pci)
        if dev.exists():
            self._remove_device(pci)
        (dev / "net" / ifname).mkdir(parents=True)
        (dev / "net" / ifname / "address").write_text(f"{mac}\n")
        for name, value in (
            ("vendor", SIM_VENDOR),
            ("device", SIM_DEVICE),
            ("class", "0x020000"),
            ("numa_node", "-1"),
            ("driver_override", "(null)"),
        ):
            (dev / name).write_text(f"{value}\n")
        group = self.root / "kernel/iommu_groups" / str(pci.bus)
        (group / "devices").mkdir(parents=True, exist_ok=True)
        (dev / "iommu_group").symlink_to(f"../../../../kernel/iommu_groups/{pci.bus}")
        (dev / "driver").symlink_to(f"../../drivers/{SIM_DRIVER}")
        (self.root / "bus/pci/drivers" / SIM_DRIVER / str(pci)).symlink_to(f"../../devices/{pci}")

    def _remove_device(self, pci: PciAddress) -> None:
        for link in (self.root / "bus/pci/drivers").glob(f"*/{pci}"):
            link.unlink()
        shutil.rmtree(self.root / "bus/pci/devices" / str(pci), ignore_errors=True)
        shutil.rmtree(self.root / "kernel/iommu_groups" / str(pci.bus), ignore_errors=True)
