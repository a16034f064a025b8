"""The lab's host service on either level: `vfhotplug-host serve` as a child process, with a fresh lab PKI,
the config of lab.service_config, its log, and readiness by Health on its admin socket."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from contract.host_api import HostCallError
from host_side import pki
from host_side.api.client import HostClient
from lab.service_config import ServiceConfig, service_toml


@dataclass(frozen=True)
class GuestCredentials:
    """What the VM side needs to reach the service: CA, its client certificate and key."""

    ca: Path
    cert: Path
    key: Path


class HostService:
    """One `vfhotplug-host serve --config <folder>/host.toml`; `prepare()` first, then `start()` (or
    `launch()` now and `wait_ready()` later, so it reconciles while something else boots)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder.resolve()
        self.config_path = self.folder / "host.toml"
        self.admin_socket = self.folder / "run/admin.sock"
        self.log_path = self.folder / "host.log"
        self._proc: subprocess.Popen[bytes] | None = None
        self._launched_at = 0.0

    def prepare(self, config: ServiceConfig, *, server_address: str) -> GuestCredentials:
        """An empty folder with a fresh PKI (the host's certificate valid for `server_address`), the
        config and no lease state; returns the VM's credentials."""
        shutil.rmtree(self.folder, ignore_errors=True)
        pki_dir = self.folder / "pki"
        pki_dir.mkdir(parents=True)
        pki.init_ca(pki_dir)
        pki.issue(pki_dir, "host", server=True, sans=[server_address])
        client = pki.issue(pki_dir, config.identity)
        (self.folder / "run").mkdir()
        self.config_path.write_text(service_toml(config))
        return GuestCredentials(pki_dir / "ca.pem", client.cert, client.key)

    def launch(self) -> None:
        self._launched_at = time.monotonic()
        with self.log_path.open("ab") as out:
            self._proc = subprocess.Popen(
                [sys.executable, "-m", "host_side", "serve", "--config", str(self.config_path)],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )

    def wait_ready(self, timeout_s: float = 30.0) -> float:
        """Waits until the admin socket answers Health; returns the seconds since launch(). A service that
        exits or stays silent fails with the tail of its log (and is stopped)."""
        if self._proc is None:
            raise RuntimeError("vfhotplug-host was not launched; call launch() first")
        while True:
            if self._proc.poll() is not None:
                raise RuntimeError(f"vfhotplug-host exited with {self._proc.returncode}:\n{self.log_tail()}")
            try:
                with self.admin() as admin:
                    admin.health(timeout_s=2.0)
                return time.monotonic() - self._launched_at
            except HostCallError:
                if time.monotonic() - self._launched_at > timeout_s:
                    self.stop()
                    raise TimeoutError(
                        f"vfhotplug-host did not answer within {timeout_s} s:\n{self.log_tail()}"
                    ) from None
                time.sleep(0.1)

    def start(self, timeout_s: float = 30.0) -> float:
        """launch() and wait_ready(); returns the seconds until the service answered."""
        self.launch()
        return self.wait_ready(timeout_s)

    def admin(self) -> HostClient:
        """The admin client over the unix socket (no mTLS: the socket's permissions guard it)."""
        return HostClient.unix(self.admin_socket)

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
