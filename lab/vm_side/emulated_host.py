"""The VM side's host service: `vfhotplug-host serve` on this machine with the `emulated-nic` backend.

It is the real service (gRPC + mTLS, SQLite leases, libvirt hot-plug into the lab guest), run by the lab's
one launcher (lab.host_service); only the SR-IOV host under it is emulated: an emulated PF/VF sysfs tree is
its inventory, and each lease hot-plugs an emulated e1000e NIC with the lease's MAC (this machine has no
SR-IOV hardware). The guest reaches it at SERVICE_IP:SERVICE_PORT, which QEMU forwards to the service's
loopback port.
"""

from __future__ import annotations

import urllib.request
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from host_side.api.wire import LeaseInfo
from lab.host_service import GuestCredentials, HostService
from lab.service_config import ServiceConfig
from lab.vm_side.vm import SERVICE_IP
from testbed.sysfs_tree import make_pf
from testbed.waiting import free_port

IDENTITY = "lab-vm"  # the lab guest's client certificate name = its [vms.*] key
POOL = "lab"
PF, PF_NETDEV = "0000:3b:00.0", "ens1f0"


def service_config(*, domain: str, uri: str, port: int, metrics_port: int, vfs: int) -> ServiceConfig:
    """The service's config on the VM side: emulated PF, every VF for the one lab guest."""
    return ServiceConfig(
        backend="emulated-nic",
        libvirt_uri=uri,
        sysfs_root="emulated-sys",
        port=port,
        pool=POOL,
        pfs=(PF_NETDEV,),
        vf_range=f"0-{vfs - 1}",
        identity=IDENTITY,
        domain=domain,
        quota=vfs,
        sync_grace_s=30.0,
        metrics_port=metrics_port,
    )


class LabHostService:
    """The service with an emulated inventory; its ports are chosen first (the guest's channel needs one)."""

    def __init__(self, folder: Path, *, domain: str, uri: str, vfs: int = 8) -> None:
        self.process = HostService(folder)
        self.port = free_port()
        self.metrics_port = free_port()
        self._domain, self._uri, self._vfs = domain, uri, vfs

    @property
    def target(self) -> str:
        """The socat address QEMU's guestfwd connects each guest connection to."""
        return f"TCP:127.0.0.1:{self.port}"

    def prepare(self) -> GuestCredentials:
        """A fresh PKI, emulated PF/VF tree, empty lease state and the config; returns the guest's files."""
        config = service_config(
            domain=self._domain,
            uri=self._uri,
            port=self.port,
            metrics_port=self.metrics_port,
            vfs=self._vfs,
        )
        creds = self.process.prepare(config, server_address=SERVICE_IP)
        make_pf(self.process.folder / "emulated-sys", PF, PF_NETDEV, self._vfs, first_group=100)
        return creds

    def start(self, timeout_s: float = 30.0) -> float:
        """Starts the service; returns the seconds until its admin socket answered Health."""
        return self.process.start(timeout_s)

    def stop(self) -> None:
        self.process.stop()

    def vf_counts(self) -> dict[tuple[str, str], int]:
        """(pool, state) -> number of VFs, as the service's Health reports it."""
        with self.process.admin() as admin:
            return admin.health().vfs

    def leases(self) -> list[LeaseInfo]:
        with self.process.admin() as admin:
            return admin.list_leases()

    def timings(self) -> dict[str, tuple[int, float]]:
        """The service's own latency so far, from its Prometheus histograms: per phase of attach/release
        (allocate, netlink, hotplug, libvirt_call, event_wait) and per API call ("call:Attach", ...);
        name -> (count, sum of seconds)."""
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5) as resp:
            text = resp.read().decode()
        labels = {
            "vfhotplug_host_phase_seconds": ("phase", ""),
            "vfhotplug_host_call_seconds": ("method", "call:"),
        }
        out: dict[str, tuple[int, float]] = {}
        for family in text_string_to_metric_families(text):
            if family.name not in labels:
                continue
            label, prefix = labels[family.name]
            counts = {
                prefix + s.labels[label]: int(s.value) for s in family.samples if s.name.endswith("_count")
            }
            sums = {
                prefix + s.labels[label]: float(s.value) for s in family.samples if s.name.endswith("_sum")
            }
            out.update({name: (n, sums.get(name, 0.0)) for name, n in counts.items()})
        return out
