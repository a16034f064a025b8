"""Reconciliation: the leases against what libvirt and sysfs say, at start-up, periodically, and for one
domain at once when libvirt reports it stopped, started, rebooted or undefined (vm_watch).

Nothing is freed on a guess: a lease is freed only when libvirt confirms its device is not in the domain
(or the domain is not running); when libvirt cannot be asked, nothing changes.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from contract.errors import BackendUnavailable, HostSideError
from host_side.api.lease_state import LeaseState
from host_side.backends.base import Hotplug, PluggedDevice, VfNetlink, lease_alias
from host_side.config import HostConfig
from host_side.inventory import SysfsInventory
from host_side.leases import Lease, LeaseStore, StaleLease
from host_side.plugging import ATTACH_UNKNOWN, Plugger

log = logging.getLogger(__name__)

# Stored answers outlive any retry of the VM side (its journal retries within minutes).
_ANSWER_KEEP_S = 86400.0


@dataclass(eq=False)  # a service: compared by identity
class Reconciler:
    cfg: HostConfig
    inventory: SysfsInventory
    store: LeaseStore
    hotplug: Hotplug
    netlink: VfNetlink
    plugger: Plugger

    def use_config(self, cfg: HostConfig) -> None:
        self.cfg = cfg  # a reloaded identity map: the domains to look at change with it

    def rescan(self) -> bool:
        """Re-reads sysfs when VF counts or drivers changed; True when the inventory was updated."""
        inv = self.inventory.scan_if_changed()
        if inv is None:
            return False
        self.store.sync_inventory(inv.vfs)
        log.info("inventory: %d VF(s) in %d pool(s)", len(inv.vfs), len(self.cfg.pools))
        return True

    def run(self, *, startup: bool = False) -> None:
        """Compares each domain's live devices with the leases and settles every lease in flight.

        Leases of a running domain: alias present -> attached (adopt or keep), absent -> settings restored and
        freed. A domain libvirt reports as not running holds no devices: its leases are freed. When libvirt
        cannot be asked, nothing changes. Our aliases without a lease are unplugged."""
        self.rescan()
        self.store.prune_answers(_ANSWER_KEEP_S)
        leases = self.store.leases()
        domains = {vm.domain for vm in self.cfg.vms.values()} | {le.domain for le in leases}
        for domain in sorted(domains):
            self._domain(domain, [le for le in leases if le.domain == domain], startup)

    def run_domain(self, domain: str) -> None:
        """`run` for one domain, at once (a lifecycle event of libvirt asked for it)."""
        self._domain(domain, [le for le in self.store.leases() if le.domain == domain], startup=False)

    def _domain(self, domain: str, mine: list[Lease], startup: bool) -> None:
        try:
            running = self.hotplug.domain_running(domain)
            live = self.hotplug.live_devices(domain) if running else {}
        except BackendUnavailable as e:
            log.warning("reconcile: domain %s skipped, libvirt unavailable: %s", domain, e)
            return
        with self.plugger.alloc:  # no allocation interleaves with the check of this domain
            for le in mine:
                current = self.store.get(le.lease_id)
                if current is None or current.state != le.state or self.plugger.is_busy(le.lease_id):
                    continue  # a call is working on it
                try:
                    self._settle(current, live.get(lease_alias(le.lease_id)), running, startup)
                except StaleLease:
                    continue
                except HostSideError as e:
                    log.warning(
                        "reconcile: lease %s (VF %s) left %s: %s", le.lease_id, le.vf.pci, le.state, e
                    )
        known = {lease_alias(le.lease_id) for le in self.store.leases()}
        for alias in sorted(set(live) - known):
            log.warning("reconcile: domain %s holds %s without a lease; unplugging it", domain, alias)
            try:
                self.hotplug.detach(domain, alias, self.cfg.timeouts.detach_s)
            except HostSideError as e:
                log.warning("reconcile: could not unplug %s from %s: %s", alias, domain, e)

    def _settle(self, le: Lease, dev: PluggedDevice | None, running: bool, startup: bool) -> None:
        if le.state is LeaseState.RESERVED:
            self.store.free(le)
            log.info("reconcile: lease %s (VF %s) was only reserved; freed", le.lease_id, le.vf.pci)
        elif dev is not None and le.state in (LeaseState.ATTACHING, LeaseState.ATTACHED):
            if le.state is LeaseState.ATTACHING or le.guest_pci is None:
                self.store.move(le, LeaseState.ATTACHED, guest_pci=dev.guest_pci)
                log.info(
                    "reconcile: adopted lease %s (VF %s in %s at %s)",
                    le.lease_id,
                    le.vf.pci,
                    le.domain,
                    dev.guest_pci,
                )
            if startup:
                self.netlink.apply_vf(le.vf, le.desired)  # a crash may have come between claim and settings
        elif dev is not None:  # detaching, or quarantined while the guest still holds it: unplug again
            self.plugger.unplug(le)
        elif (
            running
            and le.state is LeaseState.QUARANTINED
            and (le.reason or "").startswith(ATTACH_UNKNOWN)
            and time.time() - le.since <= self.cfg.timeouts.attach_s
        ):
            pass  # a timed-out attach may still complete; wait one attach timeout before believing it
        else:
            log.info(
                "reconcile: lease %s (VF %s, pod %s, VM %s, state %s) has no device in %s; freeing it",
                le.lease_id,
                le.vf.pci,
                le.pod_uid or "(warm spare)",
                le.vm,
                le.state,
                le.domain,
            )
            self.plugger.restore_and_free(le)
