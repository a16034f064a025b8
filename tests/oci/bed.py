"""The OCI hooks test bed: a simulated guest (netns + sysfs tree), the real host service on the sim
backend in its own process, the real runc from the containerd test bed, busybox bundles, and the hooks
wired into them. Also used by tests/bench_oci.py.

The guest is a network namespace: runc runs inside it (`nsenter --net`, which keeps the host's mounts;
`ip netns exec` would remount /sys and hide the cgroup mounts runc needs), so its hooks see the VFs the
host's SimBackend plugs there, exactly as hooks in a VM see hot-plugged VFs.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from host_side import pki
from host_side.api.client import HostClient
from host_side.api.wire import LeaseInfo
from testbed.sysfs_tree import make_pf
from testbed.waiting import free_port

REPO = Path(__file__).resolve().parents[2]
CONTAINERD_FS = REPO / "build/containerd/fs"
RUNC = CONTAINERD_FS / "usr/sbin/runc"
BUSYBOX = CONTAINERD_FS / "bin/busybox"
VM = "vm-a"
DOMAIN = "dom-vm-a"
APPLETS = ("sh", "ip", "cat", "ls", "sleep", "true", "echo", "readlink")
FRONT = REPO / "oci_hooks/vfhotplug-oci-hook"  # the POSIX-sh front runtimes run for every container


def missing() -> str | None:
    """Why this bed cannot run here, or None."""
    if os.geteuid() != 0:
        return "needs root (network namespaces, runc)"
    for need in (RUNC, BUSYBOX):
        if not need.exists():
            return f"{need.relative_to(REPO)} missing: run testbed/oci/setup.sh (make testbed-oci)"
    return None


def _python_env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO)}


@dataclass
class HostService:
    """`vfhotplug-host serve` (backend sim) as its own process; stop() and start() simulate an outage."""

    folder: Path
    config: Path
    admin_socket: Path
    # The service listens on the guest netns' loopback: with the sim backend host and guest share one kernel,
    # and the guest (where runc and its hooks run) reaches the host there.
    netns_prefix: tuple[str, ...] = ()
    proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout_s: float = 20.0) -> None:
        log = (self.folder / "host.log").open("ab")
        self.proc = subprocess.Popen(
            [
                *self.netns_prefix,
                sys.executable,
                "-m",
                "host_side",
                "serve",
                "--config",
                str(self.config),
                "--log-level",
                "INFO",
            ],
            env=_python_env(),
            stdout=log,
            stderr=log,
            stdin=subprocess.DEVNULL,
        )
        end = time.monotonic() + timeout_s
        while time.monotonic() < end:
            if self.proc.poll() is not None:
                raise RuntimeError(f"host service exited {self.proc.returncode}: {self.log_tail()}")
            try:
                with HostClient.unix(self.admin_socket) as c:
                    if c.health(timeout_s=1.0).serving:
                        return
            except Exception:  # not listening yet  # noqa: BLE001
                time.sleep(0.05)
        raise RuntimeError(f"host service not serving after {timeout_s}s: {self.log_tail()}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def leases(self) -> list[LeaseInfo]:
        with HostClient.unix(self.admin_socket) as c:
            return c.list_leases(timeout_s=5.0)

    def leases_of(self, container_id: str) -> list[LeaseInfo]:
        return [lease for lease in self.leases() if lease.pod_uid == container_id]

    def log_tail(self) -> str:
        try:
            return (self.folder / "host.log").read_text()[-3000:]
        except FileNotFoundError:
            return ""


@dataclass
class Guest:
    """The simulated VM side: its netns, sysfs tree, hook config and records."""

    folder: Path
    netns: str  # name under /var/run/netns
    sysfs: Path
    state_dir: Path
    run_dir: Path
    config: Path  # the plugin/hook TOML
    hook_log: Path

    @property
    def netns_path(self) -> str:
        return f"/var/run/netns/{self.netns}"

    def records(self) -> list[str]:
        return sorted(p.stem for p in (self.state_dir / "pods").glob("*.json"))

    def journal(self) -> list[str]:
        return sorted(p.stem for p in (self.state_dir / "journal").glob("*.json"))

    def links(self) -> dict[str, dict[str, Any]]:
        out = subprocess.run(
            ["ip", "-n", self.netns, "-j", "link", "show"], check=True, capture_output=True, text=True
        )
        return {str(link["ifname"]): link for link in json.loads(out.stdout or "[]")}


@dataclass
class Bed:
    folder: Path
    host: HostService
    guest: Guest
    hook: Path  # the hook executable runc calls (the real entry)
    front: Path  # the shipped sh front, beside `hook` as when installed: it execs `hook` on demand
    sim_hook: Path  # the same entry over FakeSysfsKernel (dpdk: the guest kernel's driver switches)
    runc_root: Path
    made_netns: list[str] = field(default_factory=list)

    def runc(self, *args: str, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        """runc inside the guest netns, with this bed's state root."""
        cmd = ["nsenter", f"--net={self.guest.netns_path}", str(RUNC), "--root", str(self.runc_root), *args]
        # Files, not pipes: a detached container inherits runc's stdio and would hold a pipe open.
        with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
            code = subprocess.run(
                cmd, stdout=out, stderr=err, timeout=timeout, stdin=subprocess.DEVNULL
            ).returncode
            out.seek(0)
            err.seek(0)
            res = subprocess.CompletedProcess(cmd, code, out.read(), err.read())
        if check and res.returncode != 0:
            raise AssertionError(f"runc {' '.join(args)} failed ({res.returncode}): {res.stderr}")
        return res

    def hook_cmd(
        self,
        *args: str,
        stdin: str = "",
        sim: bool = False,
        check: bool = True,
        env: Mapping[str, str] | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """The hook run by hand in the guest netns, as an admin or the runtime would (`env` added to ours)."""
        exe = self.sim_hook if sim else self.hook
        cmd = ["nsenter", f"--net={self.guest.netns_path}", str(exe), *self.hook_args(), *args]
        res = subprocess.run(
            cmd, input=stdin, capture_output=True, text=True, timeout=60, env={**os.environ, **(env or {})}
        )
        if check and res.returncode != 0:
            raise AssertionError(f"hook {' '.join(args)} failed ({res.returncode}): {res.stderr}")
        return res

    def hook_args(self) -> list[str]:
        return ["--config", str(self.guest.config), "--log-file", str(self.guest.hook_log), "--timeout", "15"]

    def bundle(self, name: str, annotation: str | None, args: Sequence[str] = ("sleep", "600")) -> Path:
        return make_bundle(self.folder / "bundles" / name, annotation, args)

    def add_hooks(self, bundle: Path, env: Sequence[str] = (), **annotations: str) -> None:
        """The README's config.json snippet (createRuntime + poststop through the sh front), pointed at
        this bed, with the hooks' `env` and `annotations` added, as a user wires hooks by hand or for
        every container instead of through `prepare`."""
        config = json.loads((bundle / "config.json").read_text())
        args = ["vfhotplug-oci-hook", *self.hook_args()]
        config["hooks"] = {
            stage: [{"path": str(self.front), "args": [*args, stage], "env": list(env), "timeout": 30}]
            for stage in ("createRuntime", "poststop")
        }
        config["annotations"] = {**config.get("annotations", {}), **annotations}
        (bundle / "config.json").write_text(json.dumps(config))

    def in_container(self, cid: str, *cmd: str) -> str:
        return self.runc("exec", cid, *cmd).stdout

    def cleanup(self) -> None:
        res = self.runc("list", "-q", check=False)
        for cid in res.stdout.split():
            self.runc("delete", "-f", cid, check=False)
        self.host.stop()
        for ns in self.made_netns:
            subprocess.run(["ip", "netns", "del", ns], check=False, capture_output=True)


def parse_ip_link(text: str) -> dict[str, str]:
    """ifname -> MAC from busybox `ip -o link` run in a container (the container's own view)."""
    out = {}
    for line in text.splitlines():
        name = line.split(":")[1].strip().split("@")[0]
        out[name] = line.split("link/ether ")[1].split()[0] if "link/ether" in line else ""
    return out


def make_bundle(bundle: Path, annotation: str | None, args: Sequence[str]) -> Path:
    """A busybox bundle from `runc spec`, made runnable here (no terminal) and annotated."""
    rootfs = bundle / "rootfs"
    (rootfs / "bin").mkdir(parents=True)
    for d in ("proc", "sys", "dev", "tmp", "etc"):
        (rootfs / d).mkdir()
    shutil.copy2(BUSYBOX, rootfs / "bin/busybox")
    for applet in APPLETS:
        (rootfs / "bin" / applet).symlink_to("busybox")
    subprocess.run([str(RUNC), "spec", "--bundle", str(bundle)], check=True)
    config = json.loads((bundle / "config.json").read_text())
    config["process"]["terminal"] = False  # no tty here
    config["process"]["args"] = list(args)
    config["root"]["readonly"] = False
    if annotation is not None:
        config["annotations"] = {"vfhotplug.io/vfs": annotation}
    (bundle / "config.json").write_text(json.dumps(config, indent=2))
    return bundle


def _wrapper(path: Path, module: str) -> Path:
    """An executable running `python -m module` from this checkout (runc execs hooks with no environment)."""
    path.write_text(f'#!/bin/sh\nPYTHONPATH={REPO} exec {sys.executable} -m {module} "$@"\n')
    path.chmod(0o755)
    return path


def _host_config(folder: Path, port: int, guest_sysfs: Path, netns: str) -> Path:
    text = f"""
backend = "sim"
state_dir = "state"
sysfs_root = "sys"

[sim]
guest_sysfs_root = "{guest_sysfs}"
netns = "{netns}"

[listen]
tcp = "127.0.0.1:{port}"
ca = "pki/ca.pem"
cert = "pki/host.pem"
key = "pki/host.key"
admin_socket = "run/admin.sock"

[timeouts]
attach_s = 10
detach_s = 5

[pools.default]
pfs = ["ens1f0"]

[vms.{VM}]
domain = "{DOMAIN}"
quota = 8
"""
    path = folder / "host.toml"
    path.write_text(text)
    return path


def _guest_config(guest: Path, port: int, pki_dir: Path, sysfs: Path, hugepages: Path, cdi_dir: Path) -> Path:
    text = f"""
log_level = "INFO"

[host]
target = "127.0.0.1:{port}"
ca = "{pki_dir}/ca.pem"
cert = "{pki_dir}/{VM}.pem"
key = "{pki_dir}/{VM}.key"
timeout_s = 5

[pods]
default_pool = "default"
max_vfs_per_pod = 4
state_dir = "{guest}/state"
run_dir = "{guest}/run"
sysfs_root = "{sysfs}"

[dpdk]
runtime_root = "{guest}/dpdk"
hugepages = "{hugepages}"

[cdi]
spec_dir = "{cdi_dir}"
"""
    path = guest / "nri.toml"
    path.write_text(text)
    return path


@contextmanager
def bed(cdi_dir: Path | None = None) -> Iterator[Bed]:
    """`cdi_dir`: where dpdk containers' CDI specs go (default: the bed's own folder)."""
    # Short folder: the admin socket path must fit in 108 bytes.
    folder = Path(tempfile.mkdtemp(prefix="vfh-oci-"))
    netns = f"vfhp-oci-{uuid.uuid4().hex[:8]}"
    subprocess.run(["ip", "netns", "add", netns], check=True)
    subprocess.run(["ip", "-n", netns, "link", "set", "lo", "up"], check=True)
    host_dir, guest_dir = folder / "host", folder / "guest"
    for d in (host_dir / "pki", host_dir / "run", guest_dir / "sys", guest_dir / "hugepages"):
        d.mkdir(parents=True)
    pki.init_ca(host_dir / "pki")
    pki.issue(host_dir / "pki", "host", server=True, sans=["127.0.0.1"])
    pki.issue(host_dir / "pki", VM)
    make_pf(host_dir / "sys", "0000:3b:00.0", "ens1f0", 4, numa=0, first_group=100)
    port = free_port()
    sysfs = guest_dir / "sys"
    host = HostService(
        host_dir,
        _host_config(host_dir, port, sysfs, netns),
        host_dir / "run/admin.sock",
        ("nsenter", f"--net=/var/run/netns/{netns}"),
    )
    guest = Guest(
        guest_dir,
        netns,
        sysfs,
        guest_dir / "state",
        guest_dir / "run",
        _guest_config(
            guest_dir, port, host_dir / "pki", sysfs, guest_dir / "hugepages", cdi_dir or guest_dir / "cdi"
        ),
        guest_dir / "hook.log",
    )
    front = folder / "vfhotplug-oci-hook"
    front.symlink_to(FRONT)
    b = Bed(
        folder,
        host,
        guest,
        _wrapper(folder / "vfhotplug-hook", "oci_hooks"),
        front,
        _wrapper(folder / "vfhotplug-hook-sim", "tests.oci.sim_kernel_hook"),
        folder / "runc",
        [netns],
    )
    try:
        host.start()
        yield b
    finally:
        b.cleanup()
        shutil.rmtree(folder, ignore_errors=True)
