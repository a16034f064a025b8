"""The system under chaos: the real containerd, the real vfhotplug-host (sim backend) and the real
vfhotplug-nri, the plugin dialling the host through a `PortGate`, its state folder on a small tmpfs.

Each component can be killed, frozen and brought back the way its supervisor (systemd) would; a lock per
component keeps the chaos thread and the final recovery from acting on one at the same time.
"""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from testbed.containerd import Containerd
from tests.soak.gate import PortGate
from tests.stack import SimStack

STATE_DISK_BYTES = 4 << 20  # small enough to fill in a moment, large enough for the records of the churn
_FILLER = "filler"


@dataclass
class SoakSystem:
    containerd: Containerd
    stack: SimStack
    gate: PortGate
    plugin_env: dict[str, str] = field(default_factory=dict)
    _locks: dict[str, threading.Lock] = field(default_factory=dict)

    @classmethod
    def start(cls, containerd: Containerd, work: Path, **stack_kw: object) -> SoakSystem:
        stack = SimStack(work, containerd.nri_socket, **stack_kw)  # type: ignore[arg-type]
        gate = PortGate(stack.port)
        stack.plugin_target_port = gate.port
        stack.plugin_state.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            [
                "mount",
                "-t",
                "tmpfs",
                "-o",
                f"size={STATE_DISK_BYTES}",
                "vfh-soak-state",
                str(stack.plugin_state),
            ],
            check=True,
        )
        system = cls(containerd, stack, gate)
        for name in ("plugin", "host", "containerd", "gate", "disk"):
            system._locks[name] = threading.Lock()
        stack.start()
        return system

    def lock(self, name: str) -> threading.Lock:
        return self._locks[name]

    # -- faults and their repair ------------------------------------------------------------------
    def signal_plugin(self, sig: int) -> None:
        if self.stack.plugin_proc is not None and self.stack.plugin_proc.poll() is None:
            self.stack.plugin_proc.send_signal(sig)
            if sig == signal.SIGKILL:
                self.stack.plugin_proc.wait(10)

    def signal_host(self, sig: int) -> None:
        if self.stack.host_proc is not None and self.stack.host_proc.poll() is None:
            self.stack.host_proc.send_signal(sig)
            if sig == signal.SIGKILL:
                self.stack.host_proc.wait(10)

    def signal_containerd(self, sig: int) -> None:
        pid = self.containerd.pid
        if pid is None:
            return
        os.kill(pid, sig)
        if sig == signal.SIGKILL:
            deadline = time.monotonic() + 10
            while self.containerd.pid is not None and time.monotonic() < deadline:
                time.sleep(0.02)

    def fill_state_disk(self) -> None:
        """Write until the state folder's tmpfs is full (ENOSPC)."""
        chunk = b"\0" * 65536
        try:
            fd = os.open(self.stack.plugin_state / _FILLER, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        except OSError as e:
            if e.errno == errno.ENOSPC:
                return  # full already
            raise
        try:
            while os.write(fd, chunk):
                pass
        except OSError as e:
            if e.errno != errno.ENOSPC:
                raise
        finally:
            os.close(fd)

    def free_state_disk(self) -> None:
        (self.stack.plugin_state / _FILLER).unlink(missing_ok=True)

    def restore(self) -> list[str]:
        """Bring every component back (thaw, restart what is dead, open the gate, free the disk)."""
        brought = []
        self.free_state_disk()
        self.gate.open_gate()
        with self.lock("containerd"):
            if self.containerd.pid is None:
                self.containerd.start()
                brought.append("containerd")
            else:
                os.kill(self.containerd.pid, signal.SIGCONT)
        with self.lock("host"):
            self.signal_host(signal.SIGCONT)
            if self.stack.host_proc is None or self.stack.host_proc.poll() is not None:
                self.stack.start_host()
                brought.append("host")
        with self.lock("plugin"):
            self.signal_plugin(signal.SIGCONT)
            if self.stack.plugin_proc is None or self.stack.plugin_proc.poll() is not None:
                self.stack.start_plugin(self.plugin_env)
                brought.append("plugin")
        return brought

    def stop(self) -> None:
        with contextlib.suppress(Exception):
            self.restore()
        self.containerd.remove_all_pods()  # while the plugin runs, so it gives the VFs back
        self.stack.stop()
        self.gate.stop()
        subprocess.run(["umount", "-l", str(self.stack.plugin_state)], check=False)
