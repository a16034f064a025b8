"""Warm spares: VFs hot-plugged into a running VM ahead of any pod, so a later Claim needs no hot-plug."""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Iterable, Mapping

from contract.errors import HostSideError
from contract.host_api import VfRequest
from host_side.allocation import ColdVf, reserve
from host_side.api.lease_state import LeaseState
from host_side.backends.base import Hotplug
from host_side.config import PoolConfig, Timeouts, VmConfig
from host_side.leases import Lease, LeaseStore
from host_side.plugging import Plugger

log = logging.getLogger(__name__)


class WarmPool:
    def __init__(
        self,
        pools: Mapping[str, PoolConfig],
        timeouts: Timeouts,
        store: LeaseStore,
        hotplug: Hotplug,
        plugger: Plugger,
    ) -> None:
        self._pools = pools
        self._timeouts = timeouts
        self._store = store
        self._hotplug = hotplug
        self._plugger = plugger

    def refill(self, vms: Iterable[VmConfig]) -> int:
        """Tops up each VM's warm spares; returns how many were plugged. Failures are logged, not raised."""
        plugged = 0
        for vm in vms:
            pools = [self._pools[p] for p in vm.pools if self._pools[p].warm_spares]
            if not pools:
                continue
            try:
                if not self._hotplug.domain_running(vm.domain):
                    continue
                with self._plugger.alloc:
                    reserved = self._reserve_spares(vm, pools)
                    self._plugger.mark(reserved)
                try:
                    plugged += self._plug_spares(vm, reserved)
                finally:
                    self._plugger.unmark(reserved)
            except HostSideError as e:
                log.warning("warm pool of VM %s not refilled: %s", vm.identity, e)
        return plugged

    def _reserve_spares(self, vm: VmConfig, pools: Iterable[PoolConfig]) -> list[Lease]:
        """Reserves the spares the VM lacks, within its quota; the caller holds the allocation lock."""
        held = self._store.leases(vm=vm.identity)
        spares = Counter(
            le.pool for le in held if le.pod_uid is None and le.state is not LeaseState.QUARANTINED
        )
        room = vm.quota - len(held)
        cold: list[ColdVf] = []
        for pool in pools:
            for _ in range(min(pool.warm_spares - spares[pool.name], room - len(cold))):
                cold.append((0, VfRequest(pool=pool.name), pool))
        return reserve(self._store, self._pools, vm, None, None, None, cold, held, self._store.used_macs())

    def _plug_spares(self, vm: VmConfig, reserved: Iterable[Lease]) -> int:
        plugged = 0
        for le in reserved:
            try:
                self._plugger.plug(le, time.monotonic() + self._timeouts.attach_s)
            except HostSideError as e:  # Plugger.plug freed or quarantined it; try the next one
                log.warning("warm spare VF %s for VM %s not plugged: %s", le.vf.pci, vm.identity, e)
                continue
            plugged += 1
            log.info("warm spare VF %s (lease %s) plugged into VM %s", le.vf.pci, le.lease_id, vm.identity)
        return plugged
