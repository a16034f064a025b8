"""The project's adapters on real VFs, step by step: inventory discovery, VF settings through netlink, and
hot-plug into the inner guest as `<interface type='hostdev'>` and as `<hostdev>`."""

from __future__ import annotations

import time
from dataclasses import asdict

from host_side.backends.base import VfRef, VfSettings, lease_alias
from host_side.backends.libvirt_hotplug import LibvirtHotplug
from lab.sriov.l1 import L1, L2, LIBVIRT_TIMEOUT_S, VF_IDS
from lab.sriov.oracles import failure_of


class AdapterChecks:
    def __init__(self, l1: L1) -> None:
        self.l1 = l1
        self.rec = l1.rec
        self._ifhd_before = VfSettings(mac="00:00:00:00:00:00")  # set by interface_hostdev

    def discover(self) -> None:
        l1, vfs = self.l1, self.l1.vfs
        self.rec.put("pf", {"name": l1.pf, "missing": list(l1.inventory.missing_pfs),
                            "pci": str(vfs[0].pf_pci) if vfs else None,
                            "ids": l1.sysfs.ids(vfs[0].pf_pci) if vfs else None})  # fmt: skip
        self.rec.put(
            "vfs",
            [{"index": v.ref.index, "pci": str(v.ref.pci), "pf_pci": str(v.ref.pf_pci), "ids": l1.sysfs.ids(v.ref.pci),
              "driver": v.driver, "netdev": v.netdev, "iommu_group": v.iommu_group,
              "iommu_group_size": v.iommu_group_size}
             for v in sorted(l1.inventory.vfs, key=lambda v: v.ref.index)],
        )  # fmt: skip

    def netlink(self) -> None:
        l1, vf = self.l1, self.l1.vfs[0]
        original = l1.nl.read_vf(vf)
        self.rec.put("netlink.original", l1.pf_view(vf))
        wanted = VfSettings(mac="52:54:00:d0:00:01", vlan=42, qos=0, spoofchk=False, trust=True)
        self.rec.put("netlink.wanted", asdict(wanted))
        t0 = time.monotonic()
        l1.nl.apply_vf(vf, wanted)
        self.rec.time("netlink.apply", time.monotonic() - t0)
        self.rec.put("netlink.applied", l1.pf_view(vf))
        # Rate limiting depends on the PF driver and link speed; record what igb does with it.
        self.rec.put("netlink.rate", failure_of(lambda: l1.nl.apply_vf(vf, VfSettings(mac=wanted.mac, vlan=42,
                     spoofchk=False, trust=True, max_tx_rate_mbps=100))))  # fmt: skip
        self.rec.put("netlink.rate_view", l1.pf_view(vf))
        self.rec.put("netlink.restore", failure_of(lambda: l1.nl.apply_vf(vf, original)))
        self.rec.put("netlink.restored", l1.pf_view(vf))

    def boot_l2(self) -> None:
        self.rec.time("l2.boot", self.l1.vm.start(boot_timeout_s=480.0))

    def interface_hostdev(self) -> None:
        l1, vf = self.l1, self.l1.vfs[0]
        self.rec.put("ifhd.before", l1.pf_view(vf))
        before = l1.nl.read_vf(vf)
        settings = VfSettings(mac="52:54:00:d0:00:02", vlan=100)
        self.rec.put("ifhd.settings", asdict(settings))
        self._plug("ifhd", l1.ifhd, vf, lease_alias("labd-ifhd0"), settings)
        self.rec.put("ifhd.attached_aliases", l1.live_aliases())

        # The VF is held by L2: a second lease on it must be refused by libvirt, and leave nothing behind.
        dup = lease_alias("labd-dup")
        self.rec.put(
            "in_use", failure_of(lambda: l1.hostdev.attach(L2, vf, dup, settings, LIBVIRT_TIMEOUT_S))
        )
        self.rec.put("in_use.aliases", l1.live_aliases())
        self._ifhd_before = before

    def interface_hostdev_release(self) -> None:
        l1, vf, alias = self.l1, self.l1.vfs[0], lease_alias("labd-ifhd0")
        self._unplug("ifhd", l1.ifhd, vf, alias)
        self.rec.put("ifhd.left_by_libvirt", l1.pf_view(vf))
        # Putting the VF's settings back is the host service's job on release; do what it does.
        l1.nl.apply_vf(vf, self._ifhd_before)
        self.rec.put("ifhd.restored", l1.pf_view(vf))
        # A second release of the same lease finds nothing to do (idempotent, no error).
        self.rec.put("ifhd.detach_again", failure_of(lambda: l1.ifhd.detach(L2, alias, LIBVIRT_TIMEOUT_S)))

    def hostdev(self) -> None:
        l1, vf = self.l1, self.l1.vfs[1]
        before = l1.nl.read_vf(vf)
        self.rec.put("hostdev.before", l1.pf_view(vf))
        # Plain hostdev: MAC and VLAN come from our netlink set-up before the attach, as the service does it.
        settings = VfSettings(mac="52:54:00:d0:00:03", vlan=200)
        l1.nl.apply_vf(vf, settings)
        alias = lease_alias("labd-hd1")
        self._plug("hostdev", l1.hostdev, vf, alias, settings)
        self._unplug("hostdev", l1.hostdev, vf, alias)
        l1.nl.apply_vf(vf, before)
        self.rec.put("hostdev.restored", l1.pf_view(vf))

    def _plug(self, key: str, hp: LibvirtHotplug, vf: VfRef, alias: str, settings: VfSettings) -> None:
        """Attach through the adapter; records the call time, what the PF, sysfs and the guest show."""
        l1 = self.l1
        l1.guest.mark()
        t0 = time.monotonic()
        device = hp.attach(L2, vf, alias, settings, LIBVIRT_TIMEOUT_S)
        self.rec.time(f"{key}.attach", time.monotonic() - t0)
        self.rec.put(
            f"{key}.plugged", {"alias": device.alias, "guest_pci": str(device.guest_pci), "mac": device.mac}
        )
        self.rec.put(f"{key}.attached", l1.pf_view(vf))
        self.rec.put(f"{key}.attached_driver", l1.sysfs.driver(vf.pci))
        where = str(device.guest_pci) if device.guest_pci is not None else None
        event, seen = l1.guest.wait_added_vf(VF_IDS, where)
        self.rec.put(f"{key}.guest_add", asdict(event))
        self.rec.time(f"{key}.guest_add_after_attach", seen)

    def _unplug(self, key: str, hp: LibvirtHotplug, vf: VfRef, alias: str) -> None:
        """Detach (returns on DEVICE_REMOVED); records aliases, the VF's driver and the guest's PCI-DEL."""
        l1 = self.l1
        bdf = self.rec.get(f"{key}.guest_add")["bdf"]
        l1.guest.mark()
        t0 = time.monotonic()
        hp.detach(L2, alias, LIBVIRT_TIMEOUT_S)
        self.rec.time(f"{key}.detach", time.monotonic() - t0)
        self.rec.put(f"{key}.detached_aliases", l1.live_aliases())
        self.rec.put(f"{key}.detached_driver", l1.sysfs.driver(vf.pci))
        _, seen = l1.guest.wait("del", lambda e: e.bdf == bdf, "PCI-DEL of the VF")
        self.rec.time(f"{key}.guest_del_after_detach", seen)
