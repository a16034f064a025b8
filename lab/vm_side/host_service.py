"""The host service of the lab: `vfhotplug-host serve` on this machine with the `emulated-nic` backend.

It is the real service (gRPC + mTLS, SQLite leases, libvirt hot-plug into the lab guest); only the SR-IOV
host under it is emulated: an emulated PF/VF sysfs tree is its inventory, and each lease hot-plugs an
emulated e1000e NIC with the lease's MAC (this machine has no SR-IOV hardware). The guest reaches it at
SERVICE_IP:SERVICE_PORT, which QEMU forwards to the service's loopback port.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from contract.host_api import HostCallError
from host_side import pki
from host_side.api.client import HostClient
from host_side.api.wire import LeaseInfo
from lab.vm_side.vm import SERVICE_IP
from testbed.sysfs_tree import make_pf
from testbed.waiting import free_port

log = logging.getLogger(__name__)

IDENTITY = "lab-vm"  # the lab guest's client certificate name = its [vms.*] key
POOL = "lab"
PF, PF_NETDEV = "0000:3b:00.0", "ens1f0"


@dataclass(frozen=True)
class GuestCredentials:
    """What the VM side needs to reach the service: CA, its client certificate and key."""

    ca: Path
    cert: Path
    key: Path


def host_config(*, domain: str, uri: str, port: int, metrics_port: int, pki_dir: Path, vfs: int) -> str:
    """The service's TOML config for the lab (relative paths are taken from the config's folder)."""
    return f"""# vfhotplug-host config of the tier C lab (written by lab/host_service.py)
backend = "emulated-nic"
libvirt_uri = "{uri}"
state_dir = "state"
sysfs_root = "emulated-sys"
metrics_address = "127.0.0.1:{metrics_port}"

[listen]
tcp = "127.0.0.1:{port}"
ca = "{pki_dir}/ca.pem"
cert = "{pki_dir}/host.pem"
key = "{pki_dir}/host.key"
admin_socket = "run/admin.sock"

[timeouts]
attach_s = 30
detach_s = 30
sync_grace_s = 30

[pools.{POOL}]
pfs = ["{PF_NETDEV}"]
vfs = ["0-{vfs - 1}"]

[vms.{IDENTITY}]
domain = "{domain}"
quota = {vfs}
pools = ["{POOL}"]
"""


class LabHostService:
    """Prepares (PKI, emulated inventory, config) and runs `vfhotplug-host serve` as a child process."""

    def __init__(self, folder: Path, *, domain: str, uri: str, vfs: int = 8) -> None:
        self.folder = folder.resolve()
        self.port = free_port()
        self.metrics_port = free_port()
        self._domain, self._uri, self._vfs = domain, uri, vfs
        self.config_path = self.folder / "host.toml"
        self.admin_socket = self.folder / "run/admin.sock"
        self.log_path = self.folder / "host.log"
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def target(self) -> str:
        """The socat address QEMU's guestfwd connects each guest connection to."""
        return f"TCP:127.0.0.1:{self.port}"

    def prepare(self) -> GuestCredentials:
        """A fresh PKI, emulated PF/VF tree, empty lease state and the config; returns the guest's files."""
        shutil.rmtree(self.folder, ignore_errors=True)
        pki_dir = self.folder / "pki"
        pki_dir.mkdir(parents=True)
        pki.init_ca(pki_dir)
        pki.issue(pki_dir, "host", server=True, sans=[SERVICE_IP])
        client = pki.issue(pki_dir, IDENTITY)
        make_pf(self.folder / "emulated-sys", PF, PF_NETDEV, self._vfs, first_group=100)
        (self.folder / "run").mkdir()
        self.config_path.write_text(
            host_config(
                domain=self._domain,
                uri=self._uri,
                port=self.port,
                metrics_port=self.metrics_port,
                pki_dir=pki_dir,
                vfs=self._vfs,
            )
        )
        return GuestCredentials(pki_dir / "ca.pem", client.cert, client.key)

    def start(self, timeout_s: float = 30.0) -> float:
        """Starts the service; returns the seconds until its admin socket answered Health."""
        t0 = time.monotonic()
        with self.log_path.open("ab") as out:
            self._proc = subprocess.Popen(
                [sys.executable, "-m", "host_side", "serve", "--config", str(self.config_path)],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )
        while True:
            if self._proc.poll() is not None:
                raise RuntimeError(f"vfhotplug-host exited with {self._proc.returncode}:\n{self.log_tail()}")
            try:
                with HostClient.unix(self.admin_socket) as admin:
                    admin.health(timeout_s=1.0)
                return time.monotonic() - t0
            except HostCallError:
                if time.monotonic() - t0 > timeout_s:
                    self.stop()
                    raise TimeoutError(
                        f"vfhotplug-host did not answer within {timeout_s} s:\n{self.log_tail()}"
                    ) from None
                time.sleep(0.1)

    def vf_counts(self) -> dict[tuple[str, str], int]:
        """(pool, state) -> number of VFs, as the service's Health reports it."""
        with HostClient.unix(self.admin_socket) as admin:
            return admin.health().vfs

    def leases(self) -> list[LeaseInfo]:
        with HostClient.unix(self.admin_socket) as admin:
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

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError as e:
            return f"(no log: {e})"
