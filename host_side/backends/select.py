"""Builds the hot-plug and VF-settings adapters a config names. Only entry points call this.

The adapters are imported here, lazily, so that `import libvirt` is needed only by the libvirt-based
backends and `pyroute2` only by the production one.
"""

from __future__ import annotations

import importlib
import logging
from typing import cast

from contract.pci import PciAddress
from host_side.backends.base import Hotplug, Observe, VfNetlink, VfRef, VfSettings
from host_side.config import HostConfig

log = logging.getLogger(__name__)


class EmulatedNicSettings:
    """The VF settings side of the `emulated-nic` backend (labs and CI only).

    An emulated NIC has no PF to program: the MAC reaches the guest in the NIC's XML, so this keeps the
    settings the engine asks for, per VF, and reports them back; nothing touches the host's NICs."""

    def __init__(self) -> None:
        self._settings: dict[PciAddress, VfSettings] = {}

    def read_vf(self, vf: VfRef) -> VfSettings:
        return self._settings.get(vf.pci, VfSettings(mac="00:00:00:00:00:00"))

    def apply_vf(self, vf: VfRef, settings: VfSettings) -> None:
        self._settings[vf.pci] = settings


def build(cfg: HostConfig, observe: Observe) -> tuple[Hotplug, VfNetlink]:
    if cfg.backend == "sim":
        assert cfg.sim is not None  # config.parse demands [sim] for this backend
        sim = importlib.import_module("host_side.backends.sim").SimBackend(
            cfg.sim.guest_sysfs_root, cfg.sim.netns
        )
        log.warning("backend 'sim': hot-plug is simulated in %s (CI only)", cfg.sim.guest_sysfs_root)
        return cast(Hotplug, sim), cast(VfNetlink, sim)
    libvirt_hotplug = importlib.import_module("host_side.backends.libvirt_hotplug")
    if cfg.backend == "emulated-nic":
        log.warning(
            "backend 'emulated-nic': emulated %s NICs instead of VFs (labs/CI only)", cfg.emulated_nic_model
        )
        hotplug = libvirt_hotplug.LibvirtHotplug(
            cfg.libvirt_uri, mode="emulated-nic", nic_model=cfg.emulated_nic_model, observe=observe
        )
        return cast(Hotplug, hotplug), EmulatedNicSettings()
    hotplug = libvirt_hotplug.LibvirtHotplug(cfg.libvirt_uri, mode=cfg.hotplug_mode, observe=observe)
    netlink = importlib.import_module("host_side.backends.vf_netlink").PyrouteVfNetlink()
    return cast(Hotplug, hotplug), cast(VfNetlink, netlink)
