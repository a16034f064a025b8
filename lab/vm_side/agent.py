"""The lab agent: runs in the guest as a child of PID 1 and does what the host-side lab asks.

Why a virtio-serial agent: the lab needs to drive containerd and read the guest's PCI tree from the host
while the guest has no network to the host (only the service channel's guestfwd). A virtio-serial port is
libvirt-native, needs no guest network, answers in well under a millisecond and survives the host side
reconnecting; the serial console alone would give only markers, not replies. The agent is an oracle
independent of the code under test: it reads sysfs and talks CRI itself.

Usage (from the lab's init): python -m lab.vm_side.agent --port-name NAME
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from lab.vm_side import wire

log = logging.getLogger("lab.vm_side.agent")

READY = "LAB-AGENT-READY"


def find_port(name: str, sys_root: Path = Path("/sys")) -> Path:
    """The /dev node of the virtio-serial port called `name` (no udev here, so no /dev/virtio-ports)."""
    for port in sorted((sys_root / "class/virtio-ports").glob("vport*")):
        try:
            if (port / "name").read_text().strip() == name:
                return Path("/dev") / port.name
        except OSError:
            continue
    raise FileNotFoundError(f"no virtio-serial port named {name!r} under {sys_root}/class/virtio-ports")


def pci_devices(sys_root: Path = Path("/sys")) -> list[dict[str, Any]]:
    """Every PCI device: address, vendor:device, driver, IOMMU group and network interfaces (name, MAC)."""
    out = []
    for dev in sorted((sys_root / "bus/pci/devices").iterdir()):
        netdevs = []
        for net in sorted(dev.glob("net/*")) + sorted(dev.glob("virtio*/net/*")):
            netdevs.append({"name": net.name, "mac": (net / "address").read_text().strip()})
        driver = dev / "driver"
        group = dev / "iommu_group"
        out.append(
            {
                "bdf": dev.name,
                "id": (dev / "vendor").read_text().strip().removeprefix("0x")
                + ":"
                + (dev / "device").read_text().strip().removeprefix("0x"),
                "driver": driver.readlink().name if driver.exists() else None,
                "iommu_group": int(group.readlink().name) if group.exists() else None,
                "netdevs": netdevs,
            }
        )
    return out


class GuestOps:
    """The operations the host may call; each returns JSON-able data or raises with a clear message."""

    def __init__(self) -> None:
        self._containerd: Any = None
        self._pod_configs: dict[str, Any] = {}
        self._procs: dict[str, subprocess.Popen[bytes]] = {}
        self._lock = threading.Lock()

    def table(self) -> dict[str, Callable[..., Any]]:
        return {
            "ping": self.ping,
            "run": self.run,
            "pci": self.pci,
            "read": self.read,
            "write": self.write,
            "spawn": self.spawn,
            "signal": self.signal,
            "alive": self.alive,
            "containerd_start": self.containerd_start,
            "containerd_stop": self.containerd_stop,
            "pod_run": self.pod_run,
            "container_start": self.container_start,
            "exec": self.exec,
            "pod_remove": self.pod_remove,
            "pods": self.pods,
        }

    def ping(self) -> dict[str, float]:
        return {"uptime_s": float(Path("/proc/uptime").read_text().split()[0])}

    def run(self, argv: list[str], timeout: float = 60.0) -> dict[str, Any]:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
        return {"rc": done.returncode, "stdout": done.stdout, "stderr": done.stderr}

    def pci(self) -> list[dict[str, Any]]:
        return pci_devices()

    def read(self, path: str) -> str:
        return Path(path).read_text(errors="replace")

    def write(self, path: str, text: str) -> None:
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)

    def spawn(self, key: str, argv: list[str], log_path: str, env: dict[str, str] | None = None) -> int:
        """Starts a background process (e.g. an NRI plugin) whose output goes to `log_path`."""
        with self._lock:
            old = self._procs.get(key)
            if old is not None and old.poll() is None:
                raise RuntimeError(f"process {key!r} already runs (pid {old.pid})")
            with open(log_path, "ab") as out:
                proc = subprocess.Popen(
                    argv,
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    env={**os.environ, **(env or {})},
                    start_new_session=True,
                )
            self._procs[key] = proc
            return proc.pid

    def signal(self, key: str, signum: int = signal.SIGTERM, wait_s: float = 10.0) -> int | None:
        """Sends `signum` to the process and waits for it; returns its exit code (None: still running)."""
        with self._lock:
            proc = self._procs.get(key)
        if proc is None:
            raise KeyError(f"no process {key!r} was spawned")
        if proc.poll() is None:
            proc.send_signal(signum)
        try:
            return proc.wait(wait_s)
        except subprocess.TimeoutExpired:
            return None

    def alive(self, key: str) -> bool:
        with self._lock:
            proc = self._procs.get(key)
        return proc is not None and proc.poll() is None

    def containerd_start(self, nri_request_timeout: str = "30s") -> dict[str, Any]:
        from testbed.containerd import CONTAINERD_1_7, Containerd

        t0 = time.monotonic()
        self._containerd = Containerd(
            CONTAINERD_1_7, "lab", nri_request_timeout=nri_request_timeout, start_timeout=60.0
        )
        self._containerd.start()
        return {
            "seconds": time.monotonic() - t0,
            "nri_socket": str(self._containerd.nri_socket),
            "log": str(self._containerd.log_path),
        }

    def containerd_stop(self) -> None:
        if self._containerd is not None:
            self._containerd.cleanup(remove_files=False)

    def _runtime(self) -> Any:
        if self._containerd is None:
            raise RuntimeError("containerd is not started in the guest; call containerd_start first")
        return self._containerd.runtime()

    def pod_run(
        self, name: str, annotations: dict[str, str], host_network: bool = False, timeout: float = 60.0
    ) -> dict[str, Any]:
        """RunPodSandbox; a refusal is an error whose text is containerd's (and so the plugin's) message."""
        from testbed.containerd import pod_config, run_pod

        t0 = time.monotonic()
        pod_id = run_pod(
            self._runtime(), name, annotations=annotations, host_network=host_network, timeout=timeout
        )
        seconds = time.monotonic() - t0
        config = pod_config(name, annotations=annotations, host_network=host_network)
        self._pod_configs[pod_id] = config
        return {"id": pod_id, "uid": config.metadata.uid, "seconds": seconds}

    def container_start(
        self,
        pod_id: str,
        name: str,
        command: list[str],
        ro_mounts: dict[str, str] | None = None,
        add_capabilities: list[str] | None = None,
    ) -> dict[str, Any]:
        from testbed.containerd import create_container, start_container

        t0 = time.monotonic()
        rt = self._runtime()
        cid = create_container(
            rt,
            pod_id,
            self._pod_configs[pod_id],
            name,
            command=command,
            ro_mounts=ro_mounts,
            add_capabilities=add_capabilities or (),
        )
        start_container(rt, cid)
        return {"id": cid, "seconds": time.monotonic() - t0}

    def exec(self, container_id: str, cmd: list[str], timeout: int = 20) -> dict[str, Any]:
        from testbed.containerd import exec_sync

        rc, out, err = exec_sync(self._runtime(), container_id, cmd, timeout=timeout)
        return {"rc": rc, "stdout": out, "stderr": err}

    def pod_remove(self, pod_id: str) -> dict[str, float]:
        from testbed.containerd import stop_and_remove_pod

        t0 = time.monotonic()
        stop_and_remove_pod(self._runtime(), pod_id)
        self._pod_configs.pop(pod_id, None)
        return {"seconds": time.monotonic() - t0}

    def pods(self) -> list[str]:
        from cri_api.v1 import api_pb2

        resp = self._runtime().ListPodSandbox(api_pb2.ListPodSandboxRequest(), timeout=30)
        return [p.id for p in resp.items]


class Agent:
    """Reads requests from the port, runs each in a thread, writes replies (whole lines, under a lock)."""

    def __init__(self, port: Path, ops: GuestOps) -> None:
        self._fd = os.open(port, os.O_RDWR)
        self._ops = ops.table()
        self._write_lock = threading.Lock()

    def _reply(self, reply: wire.Reply) -> None:
        data = wire.encode(reply)
        with self._write_lock:
            while data:
                data = data[os.write(self._fd, data) :]

    def _handle(self, req: wire.Request) -> None:
        fn = self._ops.get(req.op)
        if fn is None:
            self._reply(wire.Reply(req.id, False, error=f"unknown op {req.op!r}; known: {sorted(self._ops)}"))
            return
        try:
            result = fn(**req.args)
        except Exception as e:  # every failure goes back to the host as the reply's error text
            log.warning("op %s failed: %s", req.op, e)
            log.debug("op %s traceback", req.op, exc_info=True)
            detail = e.details() if hasattr(e, "details") else ""
            self._reply(wire.Reply(req.id, False, error=f"{type(e).__name__}: {detail or e}"))
            return
        self._reply(wire.Reply(req.id, True, result))

    def serve(self) -> None:
        lines = wire.LineBuffer()
        print(READY, flush=True)
        while True:
            data = os.read(self._fd, 65536)
            if not data:
                # The host side is not connected: virtio-serial reads return EOF until it is.
                time.sleep(0.05)
                continue
            for line in lines.feed(data):
                try:
                    req = wire.decode_request(line)
                except ValueError as e:
                    log.warning("dropping a bad request: %s", e)
                    continue
                threading.Thread(target=self._handle, args=(req,), daemon=True).start()


def main() -> None:
    parser = argparse.ArgumentParser(description="lab agent (runs inside the lab guest)")
    parser.add_argument("--port-name", required=True, help="name of the virtio-serial port to serve")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s agent %(levelname)s %(message)s")
    Agent(find_port(args.port_name), GuestOps()).serve()


if __name__ == "__main__":
    main()
