"""Bind a found VF to its pod per mode, and undo it.

kernel: the netdev moves into the pod's netns under the requested name, with MTU, address, up.
dpdk: the VF leaves its kernel driver for vfio-pci (through driver_override) and its IOMMU group is noted.
vpp: nothing here; the datapath step hands the VF to VPP.
Every undo checks the actual state first, so it is safe after a crash mid-step and safe to repeat.
"""

from __future__ import annotations

import logging
from dataclasses import replace

from vm_side.demand import Mode
from vm_side.netlink import GuestNetlink, LinkError
from vm_side.pod_record import PodRecord, VfBinding
from vm_side.sysfs import VFIO_DRIVER, GuestSysfs, SysfsError

log = logging.getLogger(__name__)


class BindError(RuntimeError):
    """A VF could not be bound or given back; the message names the VF and what to check."""


class Binder:
    def __init__(self, sysfs: GuestSysfs, netlink: GuestNetlink) -> None:
        self._sysfs = sysfs
        self._netlink = netlink

    def note_original(self, vf: VfBinding) -> VfBinding:
        """What undo needs, read before anything changes (the caller persists it first)."""
        if vf.slot.mode is Mode.DPDK and vf.guest_pci is not None:
            return replace(vf, original_driver=self._sysfs.driver(vf.guest_pci))
        return vf

    def bind(self, rec: PodRecord, vf: VfBinding) -> VfBinding:
        try:
            if vf.slot.mode is Mode.KERNEL:
                return self._bind_kernel(rec, vf)
            if vf.slot.mode is Mode.DPDK:
                return self._bind_vfio(rec, vf)
        except (LinkError, SysfsError) as e:
            raise BindError(f"VF {vf.guest_pci} (MAC {vf.grant.mac}) for {vf.slot.ifname}: {e}") from e
        return vf

    def unbind(self, rec: PodRecord, vf: VfBinding) -> VfBinding:
        """Give the VF back to the guest as it was; raises BindError when the kernel refuses."""
        try:
            if vf.slot.mode is Mode.KERNEL:
                home = self._netlink.move_home(vf.grant.mac, rec.netns, vf.guest_ifname or vf.slot.ifname)
                if home is None:
                    log.info(
                        "pod %s: VF %s (MAC %s) is in no netns any more",
                        rec.pod_uid,
                        vf.guest_pci,
                        vf.grant.mac,
                    )
                else:
                    log.info("pod %s: VF %s back in the guest netns as %s", rec.pod_uid, vf.guest_pci, home)
            elif (
                vf.slot.mode is Mode.DPDK
                and vf.guest_pci is not None
                and self._sysfs.device_exists(vf.guest_pci)
            ):
                if self._sysfs.driver(vf.guest_pci) != vf.original_driver:
                    self._sysfs.bind_via_override(vf.guest_pci, vf.original_driver)
                    log.info("pod %s: VF %s back on driver %s", rec.pod_uid, vf.guest_pci, vf.original_driver)
        except (LinkError, SysfsError) as e:
            raise BindError(f"undo VF {vf.guest_pci} (MAC {vf.grant.mac}) of pod {rec.pod_uid}: {e}") from e
        return replace(vf, bound=False)

    def _bind_kernel(self, rec: PodRecord, vf: VfBinding) -> VfBinding:
        if vf.guest_ifname is None:
            raise BindError(
                f"VF {vf.guest_pci} (MAC {vf.grant.mac}) has no netdev in the guest; kernel mode needs one"
            )
        moved = self._netlink.move_into_pod(
            vf.guest_ifname, rec.netns, vf.slot.ifname, vf.slot.mtu, vf.slot.ip
        )
        log.info(
            "pod %s: VF %s (%s, MAC %s) is %s in %s",
            rec.pod_uid,
            vf.guest_pci,
            vf.guest_ifname,
            vf.grant.mac,
            moved.ifname,
            rec.netns,
        )
        return replace(vf, bound=True)

    def _bind_vfio(self, rec: PodRecord, vf: VfBinding) -> VfBinding:
        pci = vf.guest_pci
        if pci is None:
            raise BindError(f"VF MAC {vf.grant.mac}: no guest PCI address, cannot bind vfio-pci")
        if not self._sysfs.driver_loaded(VFIO_DRIVER):
            raise BindError(f"VF {pci}: the guest has no vfio-pci driver; load it (modprobe vfio-pci)")
        self._sysfs.bind_via_override(pci, VFIO_DRIVER)
        group = self._sysfs.iommu_group(pci)
        if group is None:
            raise BindError(f"VF {pci}: no IOMMU group; give the VM a vIOMMU or enable vfio no-IOMMU mode")
        dev = self._sysfs.vfio_group_dev(group)
        if dev is None:
            raise BindError(f"VF {pci}: vfio group {group} has no device node numbers in sysfs")
        log.info("pod %s: VF %s on vfio-pci, group %s", rec.pod_uid, pci, group)
        return replace(vf, bound=True, iommu_group=group, vfio_group_dev=dev)
