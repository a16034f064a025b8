"""The lease engine: Attach, Claim, Release, Sync, List, the warm pool and reconciliation.

It turns calls into lease transitions (leases.py), VF settings (VfNetlink) and hot-plugs (Hotplug); the
pure choices come from policy.py. Every call is all or nothing: what a call took is given back when a
later step fails, and a device whose fate is unknown (timeout) is quarantined, never reused. The paths
live in attach.py, release.py, warm_pool.py and reconcile.py; this facade wires them to one lease store.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import replace

from contract.errors import PermissionDenied
from host_side.attach import Attacher
from host_side.backends.base import Hotplug, Observe, VfNetlink
from host_side.config import HostConfig, VmConfig
from host_side.inventory import SysfsInventory
from host_side.leases import Lease, LeaseStore
from host_side.plugging import Plugger
from host_side.reconcile import Reconciler
from host_side.release import Releaser
from host_side.replay import RequestGate
from host_side.warm_pool import WarmPool


class Engine:
    def __init__(
        self,
        cfg: HostConfig,
        inventory: SysfsInventory,
        store: LeaseStore,
        hotplug: Hotplug,
        netlink: VfNetlink,
        *,
        observe: Observe | None = None,
    ) -> None:
        self._cfg = cfg
        self._store = store
        plugger = Plugger(cfg.timeouts, store, hotplug, netlink, observe)
        self._reconciler = Reconciler(cfg, inventory, store, hotplug, netlink, plugger)
        gate = RequestGate()
        self._attacher = Attacher(cfg.pools, store, hotplug, netlink, plugger, gate, self.rescan)
        self._releaser = Releaser(cfg.timeouts, store, plugger, gate)
        self._warm = WarmPool(cfg.pools, cfg.timeouts, store, hotplug, plugger)
        # The calls themselves, bound straight to the paths that make them.
        self.attach = self._attacher.attach
        self.release = self._releaser.release
        self.sync = self._releaser.sync

    # ---- identity ---------------------------------------------------------------------------------

    def replace_vms(self, vms: Mapping[str, VmConfig]) -> None:
        """A reloaded [vms] table; a VM taken out keeps its leases until the admin releases them."""
        self._cfg = replace(self._cfg, vms=vms)
        self._reconciler.use_config(self._cfg)

    def vm(self, identity: str) -> VmConfig:
        vm = self._cfg.vms.get(identity)
        if vm is None:
            raise PermissionDenied(
                f"identity {identity!r} is not a VM of this host; add it under [vms] in the host config"
            )
        return vm

    # ---- calls ----------------------------------------------------------------------------------

    def leases(self, vm: VmConfig | None) -> list[Lease]:
        """A VM sees its own leases only; the admin (None) sees all."""
        return self._store.leases(vm=vm.identity if vm else None)

    def counts(self) -> Counter[tuple[str, str]]:
        return self._store.counts()

    # ---- warm pool and reconcile ------------------------------------------------------------------

    def refill_warm(self, only_vm: str | None = None) -> int:
        """Tops up each VM's (or only `only_vm`'s) warm spares; returns how many were plugged. Failures are
        logged, not raised."""
        return self._warm.refill(vm for vm in self._cfg.vms.values() if only_vm in (None, vm.identity))

    def rescan(self) -> bool:
        """Re-reads sysfs when VF counts or drivers changed; True when the inventory was updated."""
        return self._reconciler.rescan()

    def reconcile(self, *, startup: bool = False) -> None:
        self._reconciler.run(startup=startup)

    def reconcile_domain(self, domain: str) -> None:
        self._reconciler.run_domain(domain)
