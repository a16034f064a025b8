"""The whole VM-side flow on one machine: the real host service (backend `sim`, CI only), the real
vfhotplug-nri process and the real containerd test bed, wired together with a lab PKI over mTLS.

The `sim` backend stands in for the missing SR-IOV hardware and hypervisor: on attach it creates a real
veth netdev with the lease's MAC and writes the VF's PCI entry into a guest-sysfs tree that the plugin
reads through its injectable root. Everything else is the production code path.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from contract.host_api import HostCallError
from host_side import pki
from host_side.api.client import HostClient
from host_side.api.wire import LeaseInfo
from testbed.sysfs_tree import make_pf
from testbed.waiting import eventually, free_port

REPO = Path(__file__).resolve().parents[1]
VM = "vm-1"
POOL = "net"


def _wait(proc: subprocess.Popen[bytes], log: Path, ready: str, what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        if ready in log.read_text(errors="replace"):
            return
        time.sleep(0.05)
    proc.kill()
    raise RuntimeError(f"{what} not ready in {timeout}s:\n{log.read_text()[-3000:]}")


def answers_health(admin: HostClient) -> bool:
    """Whether the host service answers Health on this client now (not yet, or gone: False)."""
    try:
        admin.health(timeout_s=1)
    except HostCallError:
        return False
    return True


@dataclass
class SimStack:
    """Host service + plugin over `work` (short path: unix sockets must fit in 108 bytes)."""

    work: Path
    nri_socket: Path
    vfs: int = 8
    warm: int = 0
    quota: int = 64
    plugin_index: str = "10"
    plugin_module: str = "nri_plugin"
    plugin_extra: str = ""  # more TOML tables for nri.toml (e.g. [vpp])
    cdi_spec_dir: Path | None = None  # the runtime's CDI folder (containerd 2.x); default: our own
    health_poll_s: float = 0.5
    metrics_port: int = field(default_factory=free_port)
    warm_refill_s: float = 5.0
    port: int = field(default_factory=free_port)
    pools: tuple[str, ...] = (POOL,)  # one PF of `vfs` VFs each
    plugin_target_port: int | None = (
        None  # where the plugin dials the host (a gate in between); default `port`
    )
    host_proc: subprocess.Popen[bytes] | None = None
    plugin_proc: subprocess.Popen[bytes] | None = None

    @property
    def guest_sysfs(self) -> Path:
        return self.work / "guest-sys"

    @property
    def pki_dir(self) -> Path:
        return self.work / "pki"

    @property
    def host_config(self) -> Path:
        return self.work / "host.toml"

    @property
    def plugin_config(self) -> Path:
        return self.work / "nri.toml"

    @property
    def plugin_state(self) -> Path:
        return self.work / "nri-state"

    @property
    def dpdk_root(self) -> Path:
        return self.work / "nri-dpdk"

    @property
    def cdi_dir(self) -> Path:
        return self.cdi_spec_dir or self.work / "nri-cdi"

    @property
    def hugepages(self) -> Path:
        return self.work / "hugepages"

    @property
    def admin_socket(self) -> Path:
        return self.work / "admin.sock"

    def write_files(self) -> None:
        self.work.mkdir(parents=True, exist_ok=True)
        # dpdk pods mount the hugepage folder; this machine has no /dev/hugepages (a plain folder serves)
        self.hugepages.mkdir(exist_ok=True)
        if not (self.pki_dir / "ca.pem").exists():
            pki.init_ca(self.pki_dir)
            pki.issue(self.pki_dir, "host", server=True, sans=["127.0.0.1"])
            pki.issue(self.pki_dir, VM)
        if not (self.work / "host-sys").exists():
            for i, _ in enumerate(self.pools):
                make_pf(
                    self.work / "host-sys",
                    f"0000:{0x3B + 2 * i:02x}:00.0",
                    f"ens{i + 1}f0",
                    self.vfs,
                    first_group=100 + 100 * i,
                )
        pools = "".join(
            f"""
[pools.{name}]
pfs = ["ens{i + 1}f0"]
warm_spares = {self.warm}
allow_trust = true
"""
            for i, name in enumerate(self.pools)
        )
        self.host_config.write_text(
            f"""backend = "sim"
state_dir = "host-state"
sysfs_root = "host-sys"

[sim]
guest_sysfs_root = "guest-sys"

[listen]
tcp = "127.0.0.1:{self.port}"
ca = "pki/ca.pem"
cert = "pki/host.pem"
key = "pki/host.key"
admin_socket = "admin.sock"

[timeouts]
attach_s = 5
detach_s = 5
sync_grace_s = 1
warm_refill_interval_s = {self.warm_refill_s}
{pools}
[vms.{VM}]
domain = "dom-{VM}"
quota = {self.quota}
"""
        )
        self.plugin_config.write_text(
            f"""[nri]
socket = "{self.nri_socket}"
index = "{self.plugin_index}"

[host]
target = "127.0.0.1:{self.plugin_target_port or self.port}"
ca = "pki/ca.pem"
cert = "pki/{VM}.pem"
key = "pki/{VM}.key"
timeout_s = 5

[pods]
default_pool = "{self.pools[0]}"
state_dir = "nri-state"
run_dir = "nri-run"
sysfs_root = "guest-sys"

[dpdk]
runtime_root = "nri-dpdk"
hugepages = "hugepages"

[cdi]
spec_dir = "{self.cdi_dir}"

[health]
poll_interval_s = {self.health_poll_s}
metrics_address = "127.0.0.1:{self.metrics_port}"
{self.plugin_extra}"""
        )

    def start_host(self) -> None:
        self.write_files()
        log = self.work / "host.log"
        with log.open("ab") as out:
            self.host_proc = subprocess.Popen(
                [sys.executable, "-m", "host_side", "serve", "--config", str(self.host_config)],
                cwd=REPO,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        proc = self.host_proc

        def up() -> bool:
            if proc.poll() is not None:
                raise RuntimeError(f"vfhotplug-host exited:\n{log.read_text()[-3000:]}")
            with self.admin() as admin:
                return answers_health(admin)

        eventually(up, 30, "vfhotplug-host's admin Health")

    def start_plugin(self, env: dict[str, str] | None = None) -> None:
        log = self.work / "nri.log"
        offset = log.stat().st_size if log.exists() else 0
        with log.open("ab") as out:
            self.plugin_proc = subprocess.Popen(
                [sys.executable, "-m", self.plugin_module, "--config", str(self.plugin_config)],
                cwd=REPO,
                stdout=out,
                stderr=subprocess.STDOUT,
                env={**os.environ, **(env or {})},
                start_new_session=True,
            )
        deadline = time.monotonic() + 30
        while "synchronized with" not in log.read_text(errors="replace")[offset:]:
            if self.plugin_proc.poll() is not None:
                raise RuntimeError(f"vfhotplug-nri exited:\n{log.read_text()[-3000:]}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"vfhotplug-nri did not synchronize:\n{log.read_text()[-3000:]}")
            time.sleep(0.05)

    def start(self) -> SimStack:
        self.start_host()
        self.start_plugin()
        return self

    def admin(self) -> HostClient:
        return HostClient.unix(self.admin_socket)

    def leases(self) -> list[LeaseInfo]:
        with self.admin() as admin:
            return list(admin.list_leases())

    def kill_plugin(self, sig: int = signal.SIGKILL) -> None:
        if self.plugin_proc is not None and self.plugin_proc.poll() is None:
            self.plugin_proc.send_signal(sig)
            self.plugin_proc.wait(10)

    def stop(self) -> None:
        for proc in (self.plugin_proc, self.host_proc):
            if proc is not None and proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
