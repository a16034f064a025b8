"""One real containerd process of the test bed, with its own root, state, sockets and log."""

from __future__ import annotations

import logging
import os
import shutil
import signal
import stat
import subprocess
import time
from pathlib import Path

import grpc
from cri_api.v1 import api_pb2, api_pb2_grpc

from .config import K8S_NAMESPACE, Layout, NriOptions, render_cni_conflist, render_config
from .cri import stop_and_remove_pod
from .hostpaths import HostPaths
from .runtime import Runtime

log = logging.getLogger(__name__)
# Short reconnect backoff: stubs handed out before a restart() keep working right after it.
_CHANNEL_OPTIONS = (
    ("grpc.initial_reconnect_backoff_ms", 50),
    ("grpc.min_reconnect_backoff_ms", 50),
    ("grpc.max_reconnect_backoff_ms", 500),
    # containerd sends CRI answers up to 16 MiB (its max_send_message_size); gRPC's default is 4 MiB.
    ("grpc.max_receive_message_length", 16 << 20),
)
_CALL_TIMEOUT = 10.0


class ContainerdError(Exception):
    """The test bed containerd could not be started, stopped or cleaned up."""


class Containerd:
    """A containerd instance named ``name`` of the release ``runtime``, running from the prefix
    setup.sh unpacked it into.

    Instances with different names run side by side; everything but the shared folders of
    :class:`HostPaths` stays under ``<prefix>/instances/<name>``.
    """

    def __init__(
        self,
        runtime: Runtime,
        name: str = "main",
        *,
        nri_plugin_path: Path | None = None,
        nri_plugin_config_path: Path | None = None,
        nri_request_timeout: str = "2s",
        nri_registration_timeout: str = "5s",
        disable_connections: bool = False,
        host_paths: HostPaths | None = None,
        start_timeout: float = 30.0,
        stop_timeout: float = 15.0,
    ) -> None:
        self._runtime = runtime
        self._layout = Layout(runtime.prefix.resolve(), name)
        self._nri = NriOptions(
            plugin_path=nri_plugin_path or self._layout.default_nri_plugin_path,
            plugin_config_path=nri_plugin_config_path or self._layout.default_nri_plugin_config_path,
            request_timeout=nri_request_timeout,
            registration_timeout=nri_registration_timeout,
            disable_connections=disable_connections,
        )
        self._host = host_paths or HostPaths()
        self._start_timeout = start_timeout
        self._stop_timeout = stop_timeout
        self._proc: subprocess.Popen[bytes] | None = None
        self._channel: grpc.Channel | None = None
        # Sandbox ids seen at cleanup: shim sockets and CNI cache entries are named after them.
        self._task_ids: set[str] = set()

    def __repr__(self) -> str:
        return f"Containerd({self._runtime.name}, {self.name!r}, {self._layout.dir})"

    @property
    def release(self) -> Runtime:
        """Which containerd release this instance runs."""
        return self._runtime

    @property
    def name(self) -> str:
        return self._layout.name

    @property
    def layout(self) -> Layout:
        return self._layout

    @property
    def cri_socket(self) -> Path:
        return self._layout.cri_socket

    @property
    def nri_socket(self) -> Path:
        return self._layout.nri_socket

    @property
    def log_path(self) -> Path:
        return self._layout.log_path

    @property
    def host_paths(self) -> HostPaths:
        return self._host

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None and self._proc.poll() is None else None

    def runtime(self) -> api_pb2_grpc.RuntimeServiceStub:
        return api_pb2_grpc.RuntimeServiceStub(self._grpc())  # type: ignore[no-untyped-call]

    def images(self) -> api_pb2_grpc.ImageServiceStub:
        return api_pb2_grpc.ImageServiceStub(self._grpc())  # type: ignore[no-untyped-call]

    def start(self) -> None:
        """Writes the config, starts containerd, waits for CRI and NRI and imports the images.

        Raises:
            ContainerdError: the binaries are missing, or containerd exited or did not answer in
                time (the message quotes the end of its log).
        """
        if self.pid is not None:
            raise ContainerdError(f"{self} is already running (pid {self.pid})")
        if not self._layout.containerd_bin.is_file():
            raise ContainerdError(
                f"{self._layout.containerd_bin} is missing; run `make testbed-containerd` first"
            )
        self._stop_leftover()
        self._write_files()
        env = dict(os.environ)
        # containerd starts containerd-shim-runc-v2 from PATH; the shim finds runc via BinaryName.
        env["PATH"] = os.pathsep.join([*map(str, self._layout.bin_dirs), env.get("PATH", "/usr/bin:/bin")])
        started = time.monotonic()
        with self.log_path.open("ab") as out:
            self._proc = subprocess.Popen(
                [str(self._layout.containerd_bin), "--config", str(self._layout.config_path)],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,  # a Ctrl-C in the test run must not kill it mid-cleanup
            )
        self._layout.pid_path.write_text(f"{self._proc.pid}\n")
        self._wait_ready(started)
        log.info(
            "containerd %s ready in %.2fs (pid %d)", self.name, time.monotonic() - started, self._proc.pid
        )
        self._import_images()

    def stop(self) -> None:
        """SIGTERM and wait for exit. Pods and their shims keep running."""
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            self._layout.pid_path.unlink(missing_ok=True)
            return
        started = time.monotonic()
        proc.terminate()
        try:
            proc.wait(self._stop_timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            raise ContainerdError(
                f"{self} ignored SIGTERM for {self._stop_timeout}s and was killed; see {self.log_path}"
            ) from None
        finally:
            self._layout.pid_path.unlink(missing_ok=True)
        log.info("containerd %s stopped in %.2fs", self.name, time.monotonic() - started)

    def restart(self) -> None:
        """Stop and start again; running pods survive."""
        self.remove_orphans()  # else containerd 2.1 may not start again
        self.stop()
        self.start()

    def remove_all_pods(self) -> list[str]:
        """Stops and removes every pod sandbox of the instance over CRI; returns their ids."""
        rt = self.runtime()
        resp: api_pb2.ListPodSandboxResponse = rt.ListPodSandbox(
            api_pb2.ListPodSandboxRequest(), timeout=_CALL_TIMEOUT
        )
        ids = [pod.id for pod in resp.items]
        self._task_ids.update(ids)
        for pod_id in ids:
            stop_and_remove_pod(rt, pod_id)
        self.remove_orphans()
        return ids

    def remove_orphans(self) -> list[str]:
        """Workaround for containerd's bug of :attr:`Runtime.leaks_failed_sandboxes` (containerd 2.1):
        removes the tasks and containers of the namespace that CRI lists neither as pod nor as
        container, which stops their shims; returns their ids. A no-op on releases without the bug.

        Call only while no pod is being started: CRI lists a new pod only after its NRI RunPodSandbox.
        """
        if not self._runtime.leaks_failed_sandboxes:
            return []
        rt = self.runtime()
        pods = rt.ListPodSandbox(api_pb2.ListPodSandboxRequest(), timeout=_CALL_TIMEOUT).items
        containers = rt.ListContainers(api_pb2.ListContainersRequest(), timeout=_CALL_TIMEOUT).containers
        known = {p.id for p in pods} | {c.id for c in containers}
        orphans = [i for i in self.ctr("containers", "list", "--quiet").split() if i not in known]
        for cid in orphans:
            try:
                self.ctr("tasks", "delete", "--force", cid)
            except ContainerdError as e:
                # Gone already, or its shim went away under the call; deleting the container tells.
                log.info("containerd %s: task of orphan %s: %s", self.name, cid[:12], e)
            self.ctr("containers", "delete", cid)
            self._remove_sandbox_dir(cid)
        if orphans:
            log.warning(
                "containerd %s: removed %d sandbox(es) left running by pods that NRI failed "
                "(containerd/containerd#13355): %s",
                self.name,
                len(orphans),
                ", ".join(i[:12] for i in orphans),
            )
        self._task_ids.update(orphans)  # their shim sockets are named after them
        return orphans

    def cleanup(self, remove_files: bool = True) -> None:
        """Removes all pods, stops containerd, waits for the shims, then removes what the instance
        left in the shared host folders and (with ``remove_files``) its own folder.

        Starts containerd first if it is not running but has state, so leftover pods of a
        crashed run are removed properly instead of leaking their processes.

        Raises:
            ContainerdError: shims of the instance still run, or mounts remain in its folder.
        """
        if self.pid is None and self._layout.state.is_dir():
            try:
                self.start()
            except ContainerdError as e:
                # Nothing to remove over CRI then; leftover shims still make cleanup fail below.
                log.warning("cleanup of %s: cannot start it to remove its pods: %s", self, e)
        if self.pid is not None:
            self.remove_all_pods()
        self.stop()
        self._wait_shims_gone()
        if self._channel is not None:
            self._channel.close()
            self._channel = None
        self._host.clean(self.cri_socket, self._task_ids, self._layout.cni_network)
        if remove_files:
            self._remove_instance_dir()

    def ctr(self, *args: str) -> str:
        """Runs ``ctr`` against this instance in the CRI namespace and returns its output."""
        cmd = [str(self._layout.ctr_bin), "-a", str(self.cri_socket), "-n", K8S_NAMESPACE, *args]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=False)
        if done.returncode != 0:
            raise ContainerdError(f"`ctr {' '.join(args)}` on {self} failed: {done.stderr.strip()}")
        return done.stdout

    def _grpc(self) -> grpc.Channel:
        if self._channel is None:
            self._channel = grpc.insecure_channel(f"unix://{self.cri_socket}", options=_CHANNEL_OPTIONS)
        return self._channel

    def _write_files(self) -> None:
        lay = self._layout
        for d in (lay.root, lay.state, lay.cri_socket.parent, lay.config_path.parent, lay.cni_conf_dir):
            d.mkdir(parents=True, exist_ok=True)
        for d in (self._nri.plugin_path, self._nri.plugin_config_path):
            d.mkdir(parents=True, exist_ok=True)
        lay.config_path.write_text(render_config(lay, self._nri, self._runtime.config_version))
        (lay.cni_conf_dir / "10-testbed.conflist").write_text(render_cni_conflist(lay))

    def _wait_ready(self, started: float) -> None:
        rt = self.runtime()
        deadline = started + self._start_timeout
        while True:
            if self._proc is None or self._proc.poll() is not None:
                raise ContainerdError(f"{self} exited during start-up:\n{self._log_tail()}")
            # CRI answers "not initialized" until its plugin is up, so ask a real CRI call.
            try:
                rt.Version(api_pb2.VersionRequest(), timeout=0.5)
                # With disable_connections containerd never creates the NRI socket.
                if self._nri.disable_connections or _is_socket(self.nri_socket):
                    return
            except grpc.RpcError:
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise ContainerdError(
                    f"{self} did not answer on {self.cri_socket} and {self.nri_socket} within "
                    f"{self._start_timeout}s:\n{self._log_tail()}"
                )
            time.sleep(0.02)

    def _import_images(self) -> None:
        # Always import: unchanged archives are a no-op, and a rebuilt one replaces a stale image.
        for archive in self._layout.images.values():
            if not archive.is_file():
                raise ContainerdError(f"image archive {archive} is missing; run `make testbed-containerd`")
            self.ctr("images", "import", str(archive))

    def _stop_leftover(self) -> None:
        """Stops a containerd of this instance left running by a killed test run."""
        try:
            pid = int(self._layout.pid_path.read_text())
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except (OSError, ValueError):
            return
        if str(self._layout.config_path).encode() not in cmdline:
            return  # the pid was reused by something else
        log.warning("stopping leftover containerd %s (pid %d) from an earlier run", self.name, pid)
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + self._stop_timeout
        while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        if Path(f"/proc/{pid}").exists():
            raise ContainerdError(
                f"leftover containerd {self.name} (pid {pid}) ignores SIGTERM; kill it by hand"
            )

    def _wait_shims_gone(self) -> None:
        deadline = time.monotonic() + self._stop_timeout
        while pids := self._host.shim_pids(self.cri_socket):
            if time.monotonic() > deadline:
                raise ContainerdError(
                    f"shims {pids} of {self} still run after all pods were removed; see {self.log_path}"
                )
            time.sleep(0.05)

    def _remove_sandbox_dir(self, sandbox_id: str) -> None:
        """The folder and /dev/shm mount containerd 2.1 leaves behind with an orphan."""
        folder = self._layout.sandbox_dir(sandbox_id)
        shm = folder / "shm"
        if str(shm) in _mount_points():
            subprocess.run(["umount", str(shm)], capture_output=True, text=True, timeout=30, check=True)
        shutil.rmtree(folder, ignore_errors=True)

    def _remove_instance_dir(self) -> None:
        inside = str(self._layout.dir) + "/"
        mounts = [m for m in _mount_points() if m.startswith(inside)]
        if mounts:
            raise ContainerdError(f"{self} still has mounts under its folder, not removing it: {mounts}")
        shutil.rmtree(self._layout.dir, ignore_errors=False)

    def _log_tail(self, lines: int = 15) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError as e:
            return f"(no log: {e})"


def _mount_points() -> list[str]:
    with open("/proc/self/mountinfo") as f:
        return [line.split()[4] for line in f]


def _is_socket(path: Path) -> bool:
    try:
        return stat.S_ISSOCK(path.stat().st_mode)
    except FileNotFoundError:
        return False
