"""The NRI plugin stub: registers a plugin object with the runtime and delivers events to it.

A plugin is any object; the events it is subscribed to are derived from the handler methods it defines
(see EVENT_HANDLERS). Connection order: a given socket, else the pre-registered fd from
NRI_PLUGIN_SOCKET, else the runtime's socket path. containerd 1.7 never sends Shutdown: when the socket
closes, an external plugin reconnects with backoff and registers again; a pre-registered one returns.
"""

from __future__ import annotations

import logging
import os
import re
import socket
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

from google.protobuf.message import DecodeError, Message

from nri_plugin.nri_pb import nri_pb2 as _nri
from nri_plugin.ttrpc import (
    CODE_INVALID_ARGUMENT,
    CODE_UNIMPLEMENTED,
    CODE_UNKNOWN,
    ConnectionClosed,
    IncomingRequest,
    MuxTtrpcConnection,
    RpcError,
)
from vm_side.runtime_model import ContainerAdjustment, ContainerInfo, PodInfo

log = logging.getLogger(__name__)
_M = TypeVar("_M", bound=Message)

DEFAULT_SOCKET = "/var/run/nri/nri.sock"
PLUGIN_SERVICE = "nri.pkg.api.v1alpha1.Plugin"
RUNTIME_SERVICE = "nri.pkg.api.v1alpha1.Runtime"
REGISTRATION_TIMEOUT_S = 5.0
# When the runtime sends no timeout_nano, assume its default request timeout.
DEFAULT_REQUEST_BUDGET_S = 2.0

# Handler method name -> NRI event number; the subscription bit of event E is 1 << (E - 1).
EVENT_HANDLERS: Mapping[str, int] = {
    "run_pod_sandbox": _nri.RUN_POD_SANDBOX,
    "stop_pod_sandbox": _nri.STOP_POD_SANDBOX,
    "remove_pod_sandbox": _nri.REMOVE_POD_SANDBOX,
    "create_container": _nri.CREATE_CONTAINER,
    "post_create_container": _nri.POST_CREATE_CONTAINER,
    "start_container": _nri.START_CONTAINER,
    "post_start_container": _nri.POST_START_CONTAINER,
    "post_update_container": _nri.POST_UPDATE_CONTAINER,
    "remove_container": _nri.REMOVE_CONTAINER,
}
_EVENT_NAMES = {v: k for k, v in EVENT_HANDLERS.items()}
_POD_EVENTS = {_nri.RUN_POD_SANDBOX, _nri.STOP_POD_SANDBOX, _nri.REMOVE_POD_SANDBOX}
_IDX_RE = re.compile(r"[0-9]{2}")


class StubError(Exception):
    """The stub cannot start: bad name/index, no socket to connect to, registration refused."""


def event_mask(plugin: object) -> int:
    """The subscription mask for the handlers `plugin` defines."""
    mask = 0
    for name, event in EVENT_HANDLERS.items():
        if callable(getattr(plugin, name, None)):
            mask |= 1 << (event - 1)
    return mask


@dataclass(frozen=True)
class EventContext:
    """What a handler knows about its call: the event and the runtime's deadline for the answer."""

    event: str
    started: float  # time.monotonic() when the request arrived
    budget_s: float  # the runtime's timeout for this request

    @property
    def deadline(self) -> float:
        return self.started + self.budget_s

    def remaining(self) -> float:
        return self.deadline - time.monotonic()


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
    ) -> None:
        env = os.environ if environ is None else environ
        self._plugin = plugin
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
        self._warn_share = budget_warn_share
        self._max_backoff = max_backoff_s
        self._mask = event_mask(plugin)
        self._executor = ThreadPoolExecutor(max_workers=4, thread_name_prefix="nri-handler")
        self._stop = threading.Event()
        self._conn: MuxTtrpcConnection | None = None
        self.config = ""
        self.registered = threading.Event()  # set while registered; tests and health checks wait on it
        self.synchronized = threading.Event()
        self.registrations = 0

    @property
    def events(self) -> int:
        return self._mask

    # --- lifecycle ---

    def run(self) -> None:
        """Serve until stop(); an external plugin reconnects whenever the runtime goes away."""
        backoff = 0.1
        while not self._stop.is_set():
            try:
                conn = self._connect_and_register()
            except (OSError, RpcError, StubError) as e:
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
        conn = MuxTtrpcConnection(self._open_socket(), self._handle, self._executor)
        self._conn = conn
        conn.start()
        req = _nri.RegisterPluginRequest(plugin_name=self.name, plugin_idx=self.idx)
        try:
            conn.call(RUNTIME_SERVICE, "RegisterPlugin", req.SerializeToString(), REGISTRATION_TIMEOUT_S)
        except RpcError:
            conn.close("registration failed")
            raise
        self.registrations += 1
        self.registered.set()
        log.info("NRI: registered as %s-%s (events mask %#x)", self.idx, self.name, self._mask)
        return conn

    # --- requests from the runtime ---

    def _handle(self, req: IncomingRequest) -> bytes:
        if req.service != PLUGIN_SERVICE:
            raise RpcError(CODE_UNIMPLEMENTED, f"unknown service {req.service}")
        handler = self._methods.get(req.method)
        if handler is None:
            # Newer NRI calls per-event RPCs first and falls back to StateChange on Unimplemented.
            raise RpcError(CODE_UNIMPLEMENTED, f"unknown method {req.service}/{req.method}")
        budget = req.timeout_nano / 1e9 if req.timeout_nano > 0 else DEFAULT_REQUEST_BUDGET_S
        return handler(self, req.payload, time.monotonic(), budget).SerializeToString()

    def _configure(self, payload: bytes, started: float, budget: float) -> Message:
        req = _parse(_nri.ConfigureRequest, payload)
        self.config = req.config
        log.info("NRI: configured by %s %s", req.runtime_name, req.runtime_version)
        fn = getattr(self._plugin, "configure", None)
        if callable(fn):
            self._guarded("Configure", None, fn, req.config, req.runtime_name, req.runtime_version)
        return _nri.ConfigureResponse(events=self._mask)

    def _synchronize(self, payload: bytes, started: float, budget: float) -> Message:
        req = _parse(_nri.SynchronizeRequest, payload)
        pods = [_pod(p) for p in req.pods]
        containers = [_container(c) for c in req.containers]
        fn = getattr(self._plugin, "synchronize", None)
        if callable(fn):
            self._guarded(
                "Synchronize", None, fn, pods, containers, EventContext("synchronize", started, budget)
            )
        self.synchronized.set()
        return _nri.SynchronizeResponse()

    def _shutdown(self, payload: bytes, started: float, budget: float) -> Message:
        log.info("NRI: runtime asked the plugin to shut down")
        self._stop.set()
        return _nri.Empty()

    def _state_change(self, payload: bytes, started: float, budget: float) -> Message:
        req = _parse(_nri.StateChangeEvent, payload)
        name = _EVENT_NAMES.get(req.event)
        fn = getattr(self._plugin, name, None) if name else None
        if name is None or not callable(fn):
            log.debug("NRI: ignoring unsubscribed event %d", req.event)
            return _nri.Empty()
        pod = _pod(req.pod)
        ctx = EventContext(name, started, budget)
        if req.event in _POD_EVENTS:
            self._timed(ctx, pod, fn, pod, ctx)
        else:
            self._timed(ctx, pod, fn, pod, _container(req.container), ctx)
        return _nri.Empty()

    def _create_container(self, payload: bytes, started: float, budget: float) -> Message:
        req = _parse(_nri.CreateContainerRequest, payload)
        pod = _pod(req.pod)
        ctx = EventContext("create_container", started, budget)
        fn = getattr(self._plugin, "create_container", None)
        adjust = self._timed(ctx, pod, fn, pod, _container(req.container), ctx) if callable(fn) else None
        resp = _nri.CreateContainerResponse()
        if adjust is not None:
            if not isinstance(adjust, ContainerAdjustment):
                raise RpcError(
                    CODE_UNKNOWN,
                    f"create_container returned {type(adjust).__name__}, not ContainerAdjustment",
                )
            resp.adjust.CopyFrom(_adjustment_pb(adjust))
        return resp

    _methods: Mapping[str, Callable[[Stub, bytes, float, float], Message]] = {
        "Configure": _configure,
        "Synchronize": _synchronize,
        "Shutdown": _shutdown,
        "StateChange": _state_change,
        "CreateContainer": _create_container,
    }

    def _timed(self, ctx: EventContext, pod: PodInfo, fn: Callable[..., Any], *args: Any) -> Any:
        try:
            return self._guarded(ctx.event, pod, fn, *args)
        finally:
            used = time.monotonic() - ctx.started
            if used > self._warn_share * ctx.budget_s:
                log.warning(
                    "NRI: %s for pod %s took %.3fs, %.0f%% of the runtime's %.2fs budget",
                    ctx.event,
                    pod.ref,
                    used,
                    100 * used / ctx.budget_s,
                    ctx.budget_s,
                )

    @staticmethod
    def _guarded(event: str, pod: PodInfo | None, fn: Callable[..., Any], *args: Any) -> Any:
        """Runs a plugin handler; its failure becomes an error status naming the event, pod and cause."""
        try:
            return fn(*args)
        except Exception as e:
            where = f" for pod {pod.ref}" if pod else ""
            log.exception("NRI: %s%s failed", event, where)
            raise RpcError(CODE_UNKNOWN, f"vfhotplug: {event}{where} failed: {e}") from e


def _pod(pb: _nri.PodSandbox) -> PodInfo:
    netns = next((ns.path for ns in pb.linux.namespaces if ns.type == "network" and ns.path), None)
    return PodInfo(
        id=pb.id,
        name=pb.name,
        uid=pb.uid,
        namespace=pb.namespace,
        annotations=dict(pb.annotations),
        labels=dict(pb.labels),
        netns=netns,
        pid=pb.pid,
    )


def _container(pb: _nri.Container) -> ContainerInfo:
    return ContainerInfo(
        id=pb.id,
        pod_id=pb.pod_sandbox_id,
        name=pb.name,
        annotations=dict(pb.annotations),
        labels=dict(pb.labels),
        env=tuple(pb.env),
        pid=pb.pid,
    )


def _adjustment_pb(adj: ContainerAdjustment) -> _nri.ContainerAdjustment:
    pb = _nri.ContainerAdjustment()
    pb.annotations.update(adj.annotations)
    pb.env.extend(_nri.KeyValue(key=k, value=v) for k, v in adj.env.items())
    pb.mounts.extend(
        _nri.Mount(destination=m.destination, source=m.source, type=m.type, options=list(m.options))
        for m in adj.mounts
    )
    for d in adj.devices:
        dev = pb.linux.devices.add(path=d.path, type=d.type, major=d.major, minor=d.minor)
        if d.file_mode is not None:
            dev.file_mode.value = d.file_mode
        if d.uid is not None:
            dev.uid.value = d.uid
        if d.gid is not None:
            dev.gid.value = d.gid
    return pb


def _parse(cls: type[_M], payload: bytes) -> _M:
    msg = cls()
    try:
        msg.ParseFromString(payload)
    except DecodeError as e:
        raise RpcError(CODE_INVALID_ARGUMENT, f"cannot decode {cls.__name__}: {e}") from e
    return msg


__all__ = ["DEFAULT_SOCKET", "ConnectionClosed", "EventContext", "Stub", "StubError", "event_mask"]
