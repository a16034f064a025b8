"""The real `vfhotplug-nri` inside the lab guest: its config (pure) and its start/stop through the agent."""

from __future__ import annotations

import re
import signal
import time

from lab.host_service import GuestCredentials
from lab.vm_side.agent_client import GuestAgent, GuestError
from lab.vm_side.emulated_host import POOL
from lab.vm_side.vm import SERVICE_IP, SERVICE_PORT

CONFIG_PATH = "/run/vfhotplug/nri.toml"
LOG_PATH = "/run/vfhotplug/nri.log"
KEY = "vfhotplug-nri"
# VfPlugin logs this once it has connected, reconciled and synced with the host.
_SYNCED = "synchronized with"
# PodLifecycle.prepare logs "pod NS/NAME (UID): ready with N VFs in X ms, ...".
_READY_RE = re.compile(r"pod (\S+) \([^)]*\): ready with \d+ VFs in (\d+) ms")


def plugin_config(*, nri_socket: str, creds: GuestCredentials, state_dir: str = "/var/lib/vfhotplug") -> str:
    """The plugin's TOML for the lab: the host service through the guestfwd address, the lab pool."""
    return f"""# vfhotplug-nri config of the lab's VM side (written by lab.vm_side.plugin)
log_level = "INFO"

[nri]
name = "vfhotplug"
index = "10"
socket = "{nri_socket}"

[host]
target = "{SERVICE_IP}:{SERVICE_PORT}"
ca = "{creds.ca}"
cert = "{creds.cert}"
key = "{creds.key}"
timeout_s = 30

[pods]
default_pool = "{POOL}"
pools = ["{POOL}"]
run_dir = "/run/vfhotplug/pods"
state_dir = "{state_dir}"
sysfs_root = "/sys"
"""


class GuestPlugin:
    """`python -m nri_plugin --config F` as an external NRI plugin of the guest's containerd."""

    def __init__(self, agent: GuestAgent, nri_socket: str, creds: GuestCredentials) -> None:
        self._agent = agent
        self._config = plugin_config(nri_socket=nri_socket, creds=creds)

    def start(self, timeout_s: float = 60.0) -> float:
        """Starts it and waits until it has synchronized with containerd and the host; returns seconds."""
        t0 = time.monotonic()
        self._agent.call("write", path=CONFIG_PATH, text=self._config)
        synced_before = self.log().count(_SYNCED)
        self._agent.call(
            "spawn",
            key=KEY,
            argv=[".venv/bin/python", "-m", "nri_plugin", "--config", CONFIG_PATH],
            log_path=LOG_PATH,
        )
        while self.log().count(_SYNCED) == synced_before:
            if not self._agent.call("alive", key=KEY):
                raise RuntimeError(f"vfhotplug-nri exited in the guest; its log:\n{self.tail()}")
            if time.monotonic() - t0 > timeout_s:
                raise TimeoutError(f"vfhotplug-nri did not synchronize within {timeout_s} s:\n{self.tail()}")
            time.sleep(0.2)
        return time.monotonic() - t0

    def kill(self) -> None:
        """SIGKILL: no chance to clean up, as in a crash."""
        self._agent.call("signal", key=KEY, signum=int(signal.SIGKILL))

    def stop(self) -> None:
        if self._agent.call("alive", key=KEY):
            self._agent.call("signal", key=KEY, signum=int(signal.SIGTERM))

    def log(self) -> str:
        try:
            return str(self._agent.call("read", path=LOG_PATH))
        except GuestError:  # not written yet
            return ""

    def prepare_ms(self, pod_name: str) -> float | None:
        """How long the plugin took to give the pod its VFs, from its "ready with N VFs in X ms" line."""
        for line in reversed(self.log().splitlines()):
            m = _READY_RE.search(line)
            if m and m.group(1) == pod_name:
                return float(m.group(2))
        return None

    def tail(self, lines: int = 30) -> str:
        return "\n".join(self.log().splitlines()[-lines:])
