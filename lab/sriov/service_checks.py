"""The production path on real VFs: `vfhotplug-host` (backend libvirt) in L1, run by the lab's one
launcher and driven over its gRPC API with the inner guest's own client certificate: an attach, a VF
taken behind the service's back, and a release while the inner guest is paused."""

from __future__ import annotations

import threading
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import libvirt

from contract.host_api import HostCallError, VfRequest
from host_side.api.client import HostClient
from host_side.backends.base import VfRef, VfSettings
from host_side.backends.libvirt_xml import HotplugMode, device_xml, free_root_port
from lab.host_service import GuestCredentials, HostService
from lab.service_config import ServiceConfig
from lab.sriov.l1 import L1, L2, LIBVIRT_TIMEOUT_S, POOL, URI, VF_IDS
from testbed.waiting import free_port

IDENTITY = L2  # the inner guest's client certificate name = its [vms.*] key
# How long the paused guest is kept paused while its detach is pending (libvirt's own wait is 5 s).
PAUSE_S = 10.0


def l1_service_config(*, pf: str, port: int) -> ServiceConfig:
    """The production libvirt backend over the real igb PF, for the one inner guest."""
    return ServiceConfig(
        backend="libvirt",
        hotplug_mode="interface-hostdev",
        libvirt_uri=URI,
        port=port,
        pool=POOL,
        pfs=(pf,),
        identity=IDENTITY,
        domain=L2,
        quota=2,
        attach_s=LIBVIRT_TIMEOUT_S,
        detach_s=LIBVIRT_TIMEOUT_S,
        # The adapter steps plug VFs into the same inner guest by hand, under lease-style aliases the
        # service has no lease for: its periodic reconcile (60 s by default) would unplug them mid-step
        # (seen: ua-vfhp-labd-ifhd0 taken out 7 s after its attach). Once, at start, is all it needs here.
        reconcile_interval_s=3600.0,
    )


class ServiceChecks:
    def __init__(self, l1: L1) -> None:
        self.l1 = l1
        self.rec = l1.rec
        # On L1's tmpfs: SQLite's locking is not for the 9p results share.
        self.host = HostService(Path("/tmp/labd-service"))
        self._port = free_port()
        self._creds: GuestCredentials | None = None

    def start_service(self) -> None:
        """Launches the service; it imports and reconciles while the inner guest boots."""
        config = l1_service_config(pf=self.l1.pf, port=self._port)
        self._creds = self.host.prepare(config, server_address="127.0.0.1")
        self.host.launch()

    def service(self) -> None:
        if self._creds is None:
            raise RuntimeError("the service was not launched (step start_service failed)")
        self.rec.time("service.ready_after_launch", self.host.wait_ready(180.0))
        creds = self._creds
        try:
            with HostClient(f"127.0.0.1:{self._port}", ca=creds.ca, cert=creds.cert, key=creds.key) as client:
                self._calls(client)
        finally:
            self.host.stop()

    def _calls(self, client: HostClient) -> None:
        health = client.health()
        self.rec.put("service.health", {"backend": health.backend, "identity": health.identity,
                                        "vfs": {f"{p}/{st}": n for (p, st), n in health.vfs.items()}})  # fmt: skip
        self.rec.put("service.originals", {str(v.pci): self.l1.pf_view(v) for v in self.l1.vfs})
        vf_a, bdf_a = self._attach_pod_a(client)
        (vf_b,) = (v for v in self.l1.vfs if v.pci != vf_a.pci)
        self._in_use_elsewhere(client, vf_b)
        self._release_while_paused(client, vf_a, bdf_a)
        self.rec.put("service.released_view", self.l1.pf_view(vf_a))
        self.rec.put("service.leases_after_release", [
            {"pod_uid": le.pod_uid, "state": le.state} for le in client.list_leases()
        ])  # fmt: skip

    def _attach_pod_a(self, client: HostClient) -> tuple[VfRef, str]:
        """Pod A gets a VF with the MAC and VLAN it asks for; returns that VF and its guest address."""
        l1 = self.l1
        want = VfRequest(pool=POOL, mac="52:54:00:d0:00:05", vlan=300)
        l1.guest.mark()
        t0 = time.monotonic()
        (granted,) = client.attach("pod-a-uid", "pod-a", [want], "req-a", LIBVIRT_TIMEOUT_S)
        self.rec.time("service.attach", time.monotonic() - t0)
        vf_a = next(v for v in l1.vfs if str(v.pci) == str(granted.host_pci))
        self.rec.put("service.granted", {"lease_id": granted.lease_id, "host_pci": str(granted.host_pci),
                                         "guest_pci": str(granted.guest_pci), "mac": granted.mac,
                                         "vlan": granted.vlan})  # fmt: skip
        self.rec.put("service.attached", l1.pf_view(vf_a))
        self.rec.put("service.attached_driver", l1.sysfs.driver(vf_a.pci))
        self.rec.put("service.attached_aliases", l1.live_aliases())
        where = str(granted.guest_pci) if granted.guest_pci is not None else None
        event, seen = l1.guest.wait_added_vf(VF_IDS, where)
        self.rec.put("service.guest_add", asdict(event))
        self.rec.time("service.guest_add_after_attach", seen)
        return vf_a, event.bdf

    def _in_use_elsewhere(self, client: HostClient, vf_b: VfRef) -> None:
        """The other VF is taken behind the service's back (another tool hot-plugged it); pod B's request
        lands on it: the in-use error, and no lease left behind."""
        l1, outsider = self.l1, "ua-outsider-vf"
        conn = libvirt.open(URI)
        try:
            dom = conn.lookupByName(L2)
            port = free_root_port(dom.XMLDesc(0))
            xml = device_xml(HotplugMode.HOSTDEV, vf_pci=vf_b.pci, alias=outsider,
                             settings=VfSettings(mac="52:54:00:d0:00:06"), port_index=port or 0)  # fmt: skip
            l1.guest.mark()
            dom.attachDeviceFlags(xml, libvirt.VIR_DOMAIN_AFFECT_LIVE)
            added, _ = l1.guest.wait("add", lambda e: e.vendor_device == VF_IDS, "the outsider's VF")
            self.rec.put("service.in_use_vf_before", l1.pf_view(vf_b))
            try:
                client.attach("pod-b-uid", "pod-b", [VfRequest(pool=POOL)], "req-b", LIBVIRT_TIMEOUT_S)
                self.rec.put("service.in_use", {"code": None, "message": ""})
            except HostCallError as e:
                self.rec.put("service.in_use", {"code": e.code, "message": str(e)})
            self.rec.put("service.leases_after_in_use", [
                {"pod_uid": le.pod_uid, "state": le.state, "host_pci": le.host_pci} for le in client.list_leases()
            ])  # fmt: skip
            self.rec.put("service.in_use_vf_view", l1.pf_view(vf_b))
            l1.guest.mark()
            dom.detachDeviceAlias(outsider, libvirt.VIR_DOMAIN_AFFECT_LIVE)
            l1.guest.wait("del", lambda e: e.bdf == added.bdf, "PCI-DEL of the outsider's VF")
        finally:
            conn.close()

    def _release_while_paused(self, client: HostClient, vf_a: VfRef, bdf_a: str) -> None:
        """Pod A goes away while its VM is paused: the release must not be reported before it resumes."""
        l1 = self.l1
        dom = l1.vm.domain
        dom.suspend()
        l1.guest.mark()
        outcome: dict[str, Any] = {}

        def release() -> None:
            try:
                done = client.release_pod("pod-a-uid", "rel-a", LIBVIRT_TIMEOUT_S + PAUSE_S)
                outcome["released"], outcome["quarantined"] = list(done.released), list(done.quarantined)
            except HostCallError as e:
                outcome["error"] = f"{e.code}: {e}"
            outcome["done_at"] = time.monotonic()

        t0 = time.monotonic()
        worker = threading.Thread(target=release, name="paused-release")
        worker.start()
        worker.join(PAUSE_S)
        self.rec.put("paused.pending_while_paused", worker.is_alive())
        self.rec.put("paused.aliases_while_paused", l1.live_aliases())
        self.rec.put("paused.driver_while_paused", l1.sysfs.driver(vf_a.pci))
        resumed_at = time.monotonic()
        dom.resume()
        worker.join(LIBVIRT_TIMEOUT_S + PAUSE_S)
        self.rec.put("paused.release", {k: v for k, v in outcome.items() if k != "done_at"})
        self.rec.time("paused.paused_for", resumed_at - t0)
        if "done_at" in outcome:
            self.rec.time("paused.done_after_resume", outcome["done_at"] - resumed_at)
        self.rec.put("paused.aliases_after", l1.live_aliases())
        self.rec.put("paused.driver_after", l1.sysfs.driver(vf_a.pci))
        _, seen = l1.guest.wait("del", lambda e: e.bdf == bdf_a, "PCI-DEL of pod A's VF")
        self.rec.time("paused.guest_del_after_resume", seen)
