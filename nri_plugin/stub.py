"""The NRI plugin stub: connects to the runtime, registers a plugin object and serves it until stopped.

A plugin is any object; the events it is subscribed to are derived from the handler methods it defines
(see `event_routes`) and from what the runtime can deliver; `plugin_service` turns the runtime's requests
into handler calls. Connection order: a given socket, else the pre-registered fd from NRI_PLUGIN_SOCKET,
else the runtime's socket path. containerd 1.7 never sends Shutdown: when the socket closes, an external
plugin reconnects with backoff and registers again; a pre-registered one returns.

Speaks NRI v0.6.1 (containerd 1.7.24) up to v0.12: pod and container events arrive either as StateChange
(up to v0.11) or as dedicated RPCs (v0.12+); a Synchronize split into parts (v0.8+) is gathered
(`split_sync`) and handed to the plugin once; deadlines come from Configure when the runtime sends them.
Handlers see the runtime as EventContext.runtime (nri_types.RuntimeInfo).
"""

from __future__ import annotations

import logging
import os
import re
import socket
import threading
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor

from nri_plugin.nri_pb import nri_pb2 as _nri
from nri_plugin.plugin_service import PluginService
from nri_plugin.split_sync import MAX_SYNC_BYTES
from nri_plugin.ttrpc import MuxTtrpcConnection, RpcError
from vm_side.runtime_model import RuntimeInfo

log = logging.getLogger(__name__)

DEFAULT_SOCKET = "/var/run/nri/nri.sock"
RUNTIME_SERVICE = "nri.pkg.api.v1alpha1.Runtime"
# Sent as RegisterPluginRequest.NRI_version: the NRI API this stub's .proto follows. The runtime only
# logs it (containerd/nri v0.12 pkg/adaptation); a Go plugin sends its module version the same way.
NRI_API_VERSION = "v0.12.0"
_IDX_RE = re.compile(r"[0-9]{2}")


class StubError(Exception):
    """The stub cannot start: bad name/index, no socket to connect to, registration refused."""


class Stub:
    def __init__(
        self,
        plugin: object,
        *,
        name: str | None = None,
        idx: str | None = None,
        socket_path: str = DEFAULT_SOCKET,
        conn: socket.socket | None = None,
        environ: Mapping[str, str] | None = None,
        budget_warn_share: float = 0.5,
        max_backoff_s: float = 5.0,
        max_sync_bytes: int = MAX_SYNC_BYTES,
    ) -> None:
        env = os.environ if environ is None else environ
        self._fd = env.get("NRI_PLUGIN_SOCKET") if conn is None else None
        self.preregistered = self._fd is not None
        self.name = name or env.get("NRI_PLUGIN_NAME", "")
        self.idx = idx or env.get("NRI_PLUGIN_IDX", "")
        if not self.name:
            raise StubError("NRI plugin name is empty; pass a name or set NRI_PLUGIN_NAME")
        if not _IDX_RE.fullmatch(self.idx):
            raise StubError(f"NRI plugin index {self.idx!r} must be exactly two digits, e.g. '10'")
        self._socket_path = socket_path
        self._conn_given = conn
        self._max_backoff = max_backoff_s
        self._stop = threading.Event()
        self._service = PluginService(plugin, self._stop.set, budget_warn_share, max_sync_bytes)
        self._executor = ThreadPoolExecutor(max_workers=4, thread_name_prefix="nri-handler")
        self._conn: MuxTtrpcConnection | None = None
        self.registered = threading.Event()  # set while registered; tests and health checks wait on it
        self.registrations = 0

    @property
    def events(self) -> int:
        """The events subscribed to: from the last Configure, or those the oldest runtime delivers."""
        return self._service.mask

    @property
    def runtime_info(self) -> RuntimeInfo:
        """The runtime as its latest Configure described it (the oldest one before any)."""
        return self._service.runtime_info

    @property
    def config(self) -> str:
        """The plugin configuration the latest Configure carried."""
        return self._service.config

    @property
    def synchronized(self) -> threading.Event:
        """Set once the runtime's Synchronize on this connection was handed to the plugin."""
        return self._service.synchronized

    def run(self) -> None:
        """Serve until stop(); an external plugin reconnects whenever the runtime goes away."""
        backoff = 0.1
        while not self._stop.is_set():
            try:
                conn = self._connect_and_register()
            except (OSError, RpcError, StubError) as e:
                if self._stop.is_set():
                    break  # stop() closed the connection under a registration in flight
                if self.preregistered or self._conn_given is not None:
                    raise StubError(f"NRI registration failed: {e}") from e
                log.warning(
                    "NRI: cannot register with %s: %s; retrying in %.1fs", self._socket_path, e, backoff
                )
                self._stop.wait(backoff)
                backoff = min(backoff * 2, self._max_backoff)
                continue
            backoff = 0.1
            conn.wait_closed()
            self.registered.clear()
            self.synchronized.clear()
            if self._stop.is_set():
                break
            log.warning("NRI: runtime connection closed (%s)", conn.close_reason)
            if self.preregistered or self._conn_given is not None:
                break  # the runtime owns a pre-registered plugin's socket; nothing to reconnect to
        self._executor.shutdown(wait=False)

    def start(self) -> threading.Thread:
        t = threading.Thread(target=self.run, name=f"nri-stub-{self.name}", daemon=True)
        t.start()
        return t

    def stop(self) -> None:
        self._stop.set()
        if self._conn is not None:
            self._conn.close("plugin stopping")

    def _open_socket(self) -> socket.socket:
        if self._conn_given is not None:
            return self._conn_given
        if self._fd is not None:
            return socket.socket(fileno=int(self._fd))
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            s.connect(self._socket_path)
        except OSError:
            s.close()
            raise
        return s

    def _connect_and_register(self) -> MuxTtrpcConnection:
        generation = self._service.new_connection()
        conn = MuxTtrpcConnection(
            self._open_socket(), lambda req: self._service.handle(req, generation), self._executor
        )
        self._conn = conn
        conn.start()
        req = _nri.RegisterPluginRequest(
            plugin_name=self.name, plugin_idx=self.idx, NRI_version=NRI_API_VERSION
        )
        # The runtime's registration timeout is known only from an earlier Configure (v0.8+), else 5 s.
        timeout = self.runtime_info.registration_timeout_s
        try:
            conn.call(RUNTIME_SERVICE, "RegisterPlugin", req.SerializeToString(), timeout)
        except RpcError:
            conn.close("registration failed")
            raise
        self.registrations += 1
        self.registered.set()
        log.info("NRI: registered as %s-%s (events mask %#x)", self.idx, self.name, self.events)
        return conn
