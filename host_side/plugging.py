"""The side effects of one lease: VF settings and hot-plug in, hot-plug out and settings back.

Each step commits the lease's next state before doing what the state announces (leases.py), and a step
whose outcome is unknown (a timeout) quarantines the VF instead of freeing it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

from contract.errors import BackendUnavailable, DeadlineExceeded, HostSideError, NotFound, PreconditionFailed
from host_side.api.lease_state import LeaseState
from host_side.backends.base import Hotplug, Observe, VfNetlink, lease_alias
from host_side.config import Timeouts
from host_side.leases import Lease, LeaseStore

log = logging.getLogger(__name__)

# How a quarantine reason starts when an attach may or may not have reached the guest.
ATTACH_UNKNOWN = "attach outcome unknown"


def remaining(deadline: float, what: str) -> float:
    left = deadline - time.monotonic()
    if left <= 0:
        raise DeadlineExceeded(f"{what}: the call's deadline passed; everything taken is given back")
    return left


@dataclass(eq=False)  # a service: compared by identity
class Plugger:
    """Drives leases through their side effects; shared by the API calls, the warm pool and reconcile.

    `alloc` is held while VFs change owner (choose + reserve) and while reconcile settles leases;
    leases a call is working on are marked busy so reconcile keeps off them."""

    timeouts: Timeouts
    store: LeaseStore
    hotplug: Hotplug
    netlink: VfNetlink
    observe: Observe | None = None  # gets (phase, seconds) of each timed phase
    alloc: threading.Lock = field(default_factory=threading.Lock, init=False)
    _busy_lock: threading.Lock = field(default_factory=threading.Lock, init=False)
    _busy: Counter[str] = field(default_factory=Counter, init=False)

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        t0 = time.monotonic()
        try:
            yield
        finally:
            if self.observe is not None:
                self.observe(name, time.monotonic() - t0)

    def mark(self, leases: Sequence[Lease]) -> None:
        with self._busy_lock:
            self._busy.update(le.lease_id for le in leases)

    def unmark(self, leases: Sequence[Lease]) -> None:
        with self._busy_lock:
            self._busy.subtract(le.lease_id for le in leases)
            self._busy = +self._busy  # drop the zeros

    def is_busy(self, lease_id: str) -> bool:
        with self._busy_lock:
            return self._busy[lease_id] > 0

    def give_back_claims(self, claimed: Sequence[tuple[Lease, Lease]]) -> None:
        """Spares claimed by a failed call become spares again, with their own settings back."""
        for spare, _ in claimed:
            self.store.unclaim(spare)
            try:
                self.netlink.apply_vf(spare.vf, spare.desired)
            except HostSideError as e:
                current = self.store.get(spare.lease_id)
                if current is not None:
                    self.quarantine(current, f"restoring spare settings failed: {e}")
                continue
            log.info(
                "spare VF %s (lease %s) back to VM %s's warm pool", spare.vf.pci, spare.lease_id, spare.vm
            )

    def plug(self, lease: Lease, deadline: float) -> Lease:
        """reserved -> attaching -> attached. On failure the lease is freed or quarantined, and re-raised."""
        what = f"VF {lease.vf.pci} for pod {lease.pod_uid} on VM {lease.vm}"
        with self.phase("netlink"):
            original = self.netlink.read_vf(lease.vf)
        lease = self.store.move(lease, LeaseState.ATTACHING, original=original)
        asked_libvirt = False
        try:
            with self.phase("netlink"):
                self.netlink.apply_vf(lease.vf, lease.desired)
            timeout = min(self.timeouts.attach_s, remaining(deadline, what))
            asked_libvirt = True
            with self.phase("hotplug"):
                dev = self.hotplug.attach(
                    lease.domain, lease.vf, lease_alias(lease.lease_id), lease.desired, timeout
                )
        except (DeadlineExceeded, BackendUnavailable) as e:
            if not asked_libvirt:
                self.restore_and_free(lease)
                raise
            # No event in time, or libvirt went away mid-call: the device may still show up in the guest,
            # so the VF is not handed out on a guess.
            self.quarantine(lease, f"{ATTACH_UNKNOWN}: {e}")
            raise
        except BaseException:  # libvirt refused (or the VF settings failed): nothing reached the guest
            self.restore_and_free(lease)
            raise
        return self.store.move(lease, LeaseState.ATTACHED, guest_pci=dev.guest_pci)

    def quarantine(self, lease: Lease, reason: str) -> None:
        """Keeps the VF out of use until an admin or a reconcile that sees the truth frees it."""
        self.store.move(lease, LeaseState.QUARANTINED, reason=reason)
        log.error(
            "VF %s (lease %s, pod %s, VM %s) quarantined: %s",
            lease.vf.pci,
            lease.lease_id,
            lease.pod_uid,
            lease.vm,
            reason,
        )

    def restore_and_free(self, lease: Lease) -> bool:
        """Puts the VF's original settings back and frees it; quarantines it when that fails."""
        if lease.original is not None:
            try:
                with self.phase("netlink"):
                    self.netlink.apply_vf(lease.vf, lease.original)
            except HostSideError as e:
                self.quarantine(lease, f"restoring VF settings failed: {e}")
                return False
        self.store.free(lease)
        return True

    def undo_marked(self, lease: Lease, timeout_s: float) -> bool:
        """_undo for an API call: reconcile keeps off the lease meanwhile."""
        with self.alloc:
            self.mark([lease])
        try:
            return self.undo(lease, timeout_s)
        finally:
            self.unmark([lease])

    def undo(self, lease: Lease, timeout_s: float | None = None) -> bool:
        """Takes a lease back in whatever state it is; True when the VF is free again."""
        if lease.state is LeaseState.RESERVED:
            self.store.free(lease)  # nothing was touched yet
            return True
        return self.unplug(lease, timeout_s)

    def unplug(self, lease: Lease, timeout_s: float | None = None) -> bool:
        """-> detaching -> (device gone, settings restored) free; a timeout quarantines. True when freed."""
        if lease.state is not LeaseState.DETACHING:
            lease = self.store.move(lease, LeaseState.DETACHING, reason=lease.reason)
        alias = lease_alias(lease.lease_id)
        timeout = timeout_s if timeout_s is not None else self.timeouts.detach_s
        try:
            with self.phase("hotplug"):
                self.hotplug.detach(lease.domain, alias, timeout)
        except DeadlineExceeded as e:
            self.quarantine(lease, f"detach timed out, the guest still holds it: {e}")
            return False
        except NotFound:
            log.info("lease %s: libvirt no longer has %s in %s", lease.lease_id, alias, lease.domain)
        except PreconditionFailed as e:
            if self.hotplug.domain_running(lease.domain):
                # DEVICE_REMOVAL_FAILED: the guest refused and still holds the device.
                self.quarantine(lease, f"the guest refused to let go: {e}")
                return False
            log.info(
                "VM %s is not running; VF %s (lease %s) left with it", lease.vm, lease.vf.pci, lease.lease_id
            )
        return self.restore_and_free(lease)
