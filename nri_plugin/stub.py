"""The NRI plugin stub: registers a plugin object with the runtime and delivers events to it.

A plugin is any object; the events it is subscribed to are derived from the handler methods it defines
(see EVENT_HANDLERS) and from what the runtime can deliver. Connection order: a given socket, else the
pre-registered fd from NRI_PLUGIN_SOCKET, else the runtime's socket path. containerd 1.7 never sends
Shutdown: when the socket closes, an external plugin reconnects with backoff and registers again; a
pre-registered one returns.

Speaks NRI v0.6.1 (containerd 1.7.24) up to v0.12: pod and container events arrive either as StateChange
(up to v0.11) or as dedicated RPCs (v0.12+), both dispatched through one table (_ROUTES); a Synchronize
split into parts (v0.8+) is gathered and handed to the plugin once; deadlines come from Configure when
the runtime sends them. Handlers see the runtime as EventContext.runtime (nri_types.RuntimeInfo).
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
from dataclasses import dataclass, field
from typing import Any, TypeVar

from google.protobuf.message import DecodeError, Message

from nri_plugin.nri_pb import nri_pb2 as _nri
from nri_plugin.ttrpc import (
    CODE_INVALID_ARGUMENT,
    CODE_RESOURCE_EXHAUSTED,
    CODE_UNIMPLEMENTED,
    CODE_UNKNOWN,
    ConnectionClosed,
    IncomingRequest,
    MuxTtrpcConnection,
    RpcError,
)
from vm_side.runtime_model import (
    NRI_V0_6_1,
    NRI_V0_10_0,
    ContainerAdjustment,
    ContainerInfo,
    ContainerUpdate,
    NriVersion,
    PodInfo,
    RuntimeInfo,
    runtime_info,
    supports_cdi_devices,
)

log = logging.getLogger(__name__)
_M = TypeVar("_M", bound=Message)

DEFAULT_SOCKET = "/var/run/nri/nri.sock"
PLUGIN_SERVICE = "nri.pkg.api.v1alpha1.Plugin"
RUNTIME_SERVICE = "nri.pkg.api.v1alpha1.Runtime"
# Sent as RegisterPluginRequest.NRI_version: the NRI API this stub's .proto follows. The runtime only
# logs it (containerd/nri v0.12 pkg/adaptation); a Go plugin sends its module version the same way.
NRI_API_VERSION = "v0.12.0"
# A split Synchronize (v0.8+) is held in memory until its last part: past either bound the runtime is
# taken to be broken and the gathering is refused (the runtime then drops the plugin, which reconnects).
MAX_SYNC_BYTES = 64 << 20
MAX_SYNC_PARTS = 1024


@dataclass(frozen=True)
class _EventRoute:
    """One pod or container event: the handler it reaches and the RPCs that carry it."""

    handler: str  # the plugin's method
    event: int  # NRI event number; its subscription bit is 1 << (event - 1)
    rpc: str  # the dedicated Plugin RPC (v0.12+; UpdatePodSandbox v0.10+)
    request: type[Message]  # the dedicated RPC's request (has pod = 1, and container = 2 if with_container)
    response: type[Message]
    with_container: bool  # the handler is called as (pod, container, ctx), else as (pod, ctx)
    since: NriVersion = NRI_V0_6_1  # the first NRI version that delivers the event
    state_change: bool = True  # also delivered as StateChange (before v0.12); UpdatePodSandbox never is


# The one dispatch table for events without an answer of their own: StateChange and the dedicated
# RPCs both go through it. CreateContainer answers an adjustment and has its own method below.
_ROUTES: tuple[_EventRoute, ...] = (
    _EventRoute(
        "run_pod_sandbox", _nri.RUN_POD_SANDBOX, "RunPodSandbox",
        _nri.RunPodSandboxRequest, _nri.RunPodSandboxResponse, False,
    ),
    _EventRoute(
        "stop_pod_sandbox", _nri.STOP_POD_SANDBOX, "StopPodSandbox",
        _nri.StopPodSandboxRequest, _nri.StopPodSandboxResponse, False,
    ),
    _EventRoute(
        "remove_pod_sandbox", _nri.REMOVE_POD_SANDBOX, "RemovePodSandbox",
        _nri.RemovePodSandboxRequest, _nri.RemovePodSandboxResponse, False,
    ),
    _EventRoute(
        "update_pod_sandbox", _nri.UPDATE_POD_SANDBOX, "UpdatePodSandbox",
        _nri.UpdatePodSandboxRequest, _nri.UpdatePodSandboxResponse, False,
        since=NRI_V0_10_0, state_change=False,
    ),
    _EventRoute(
        "post_update_pod_sandbox", _nri.POST_UPDATE_POD_SANDBOX, "PostUpdatePodSandbox",
        _nri.PostUpdatePodSandboxRequest, _nri.PostUpdatePodSandboxResponse, False,
        since=NRI_V0_10_0,
    ),
    _EventRoute(
        "post_create_container", _nri.POST_CREATE_CONTAINER, "PostCreateContainer",
        _nri.PostCreateContainerRequest, _nri.PostCreateContainerResponse, True,
    ),
    _EventRoute(
        "start_container", _nri.START_CONTAINER, "StartContainer",
        _nri.StartContainerRequest, _nri.StartContainerResponse, True,
    ),
    _EventRoute(
        "post_start_container", _nri.POST_START_CONTAINER, "PostStartContainer",
        _nri.PostStartContainerRequest, _nri.PostStartContainerResponse, True,
    ),
    _EventRoute(
        "post_update_container", _nri.POST_UPDATE_CONTAINER, "PostUpdateContainer",
        _nri.PostUpdateContainerRequest, _nri.PostUpdateContainerResponse, True,
    ),
    _EventRoute(
        "remove_container", _nri.REMOVE_CONTAINER, "RemoveContainer",
        _nri.RemoveContainerRequest, _nri.RemoveContainerResponse, True,
    ),
)  # fmt: skip
_BY_EVENT = {r.event: r for r in _ROUTES if r.state_change}

# Handler method name -> NRI event number; the subscription bit of event E is 1 << (E - 1).
EVENT_HANDLERS: Mapping[str, int] = {
    **{r.handler: r.event for r in _ROUTES},
    "create_container": _nri.CREATE_CONTAINER,
}
# Events a runtime older than this NRI version would refuse in the mask (it fails Configure on them).
_EVENT_SINCE: Mapping[int, NriVersion] = {r.event: r.since for r in _ROUTES}
_IDX_RE = re.compile(r"[0-9]{2}")


class StubError(Exception):
    """The stub cannot start: bad name/index, no socket to connect to, registration refused."""


class RuntimeTooOld(Exception):
    """A handler asked for something the runtime's NRI cannot carry (a programming error in the plugin)."""


def event_mask(plugin: object, runtime: RuntimeInfo | None = None) -> int:
    """The subscription mask for the handlers `plugin` defines; with `runtime`, only the events that
    runtime delivers (an older runtime refuses a mask with events it does not know)."""
    mask = 0
    for name, event in EVENT_HANDLERS.items():
        if not callable(getattr(plugin, name, None)):
            continue
        if runtime is not None and runtime.nri_version < _EVENT_SINCE.get(event, NRI_V0_6_1):
            continue
        mask |= 1 << (event - 1)
    return mask


@dataclass(frozen=True)
class EventContext:
    """What a handler knows about its call: the event, the runtime's deadline for the answer, the runtime."""

    event: str
    started: float  # time.monotonic() when the request arrived (the first part's, for a split sync)
    budget_s: float  # the runtime's timeout for this request
    runtime: RuntimeInfo = field(default_factory=RuntimeInfo)  # from the latest Configure

    @property
    def deadline(self) -> float:
        return self.started + self.budget_s

    def remaining(self) -> float:
        return self.deadline - time.monotonic()


@dataclass(frozen=True)
class _Call:
    """One request from the runtime as the method handlers see it."""

    payload: bytes
    started: float
    budget_s: float
    generation: int  # which connection it came on (a reconnect starts a new one)


@dataclass
class _SyncParts:
    """The parts of a split Synchronize gathered so far (one connection's)."""

    generation: int
    started: float
    deadline: float
    pods: list[PodInfo] = field(default_factory=list)
    containers: list[ContainerInfo] = field(default_factory=list)
    parts: int = 0
    size: int = 0


def _dedicated_rpc(route: _EventRoute) -> Callable[[Stub, _Call], Message]:
    """The method-table entry of one dedicated event RPC: the shared route, bound to its event."""

    def serve(stub: Stub, call: _Call) -> Message:
        return stub._dedicated(route, call)

    return serve


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
        self._max_sync_bytes = max_sync_bytes
        # Until the runtime configures us, assume the oldest runtime (v0.6.1) and its default timeouts.
        self.runtime_info = RuntimeInfo()
        self._mask = event_mask(plugin, self.runtime_info)
        self._generation = 0
        self._sync_lock = threading.Lock()
        self._sync: _SyncParts | None = None
        self._executor = ThreadPoolExecutor(max_workers=4, thread_name_prefix="nri-handler")
        self._stop = threading.Event()
        self._conn: MuxTtrpcConnection | None = None
        self.config = ""
        self.registered = threading.Event()  # set while registered; tests and health checks wait on it
        self.synchronized = threading.Event()
        self.registrations = 0

    @property
    def events(self) -> int:
        """The events subscribed to: from the last Configure, or those the oldest runtime delivers."""
        return self._mask

    # --- lifecycle ---

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
        with self._sync_lock:
            # A split Synchronize cut short by a reconnect is dropped; the runtime starts over.
            self._generation += 1
            self._sync = None
            generation = self._generation
        conn = MuxTtrpcConnection(
            self._open_socket(), lambda req: self._handle(req, generation), self._executor
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
        log.info("NRI: registered as %s-%s (events mask %#x)", self.idx, self.name, self._mask)
        return conn

    # --- requests from the runtime ---

    def _handle(self, req: IncomingRequest, generation: int) -> bytes:
        if req.service != PLUGIN_SERVICE:
            raise RpcError(CODE_UNIMPLEMENTED, f"unknown service {req.service}")
        handler = self._methods.get(req.method)
        if handler is None:
            raise RpcError(CODE_UNIMPLEMENTED, f"unknown method {req.service}/{req.method}")
        # timeout_nano is what is left of the runtime's deadline; without it, its configured timeout.
        budget = self.runtime_info.request_timeout_s
        if req.timeout_nano > 0:
            budget = min(budget, req.timeout_nano / 1e9)
        call = _Call(req.payload, time.monotonic(), budget, generation)
        return handler(self, call).SerializeToString()

    def _context(self, event: str, call: _Call) -> EventContext:
        return EventContext(event, call.started, call.budget_s, self.runtime_info)

    def _subscribed(self, event: int) -> bool:
        return bool(self._mask & (1 << (event - 1)))

    def _configure(self, call: _Call) -> Message:
        req = _parse(_nri.ConfigureRequest, call.payload)
        info = runtime_info(
            req.runtime_name,
            req.runtime_version,
            nri_version=req.NRI_version,
            registration_timeout_ms=req.registration_timeout,
            request_timeout_ms=req.request_timeout,
        )
        mask = event_mask(self._plugin, info)
        unsupported = event_mask(self._plugin) & ~mask
        if unsupported and not mask:
            # Mask 0 means "every event" to the runtime, the opposite of what the plugin can handle.
            raise RpcError(
                CODE_UNKNOWN,
                f"vfhotplug: {info.ref} delivers none of the events this plugin handles "
                f"(mask {unsupported:#x}); run it against a newer runtime or give it a handler this one delivers",
            )
        if unsupported:
            log.warning(
                "NRI: %s cannot deliver the events of mask %#x; the plugin's handlers for them stay idle",
                info.ref,
                unsupported,
            )
        self.runtime_info = info
        self._mask = mask
        self.config = req.config
        log.info(
            "NRI: configured by %s; registration timeout %.1fs, request timeout %.1fs%s",
            info.ref,
            info.registration_timeout_s,
            info.request_timeout_s,
            "" if info.timeouts_sent else " (defaults: the runtime sent none)",
        )
        with self._sync_lock:
            self._sync = None  # a new configuration starts a new synchronization
        fn = getattr(self._plugin, "configure", None)
        if callable(fn):
            self._guarded("Configure", None, fn, req.config, req.runtime_name, req.runtime_version)
        return _nri.ConfigureResponse(events=mask)

    def _synchronize(self, call: _Call) -> Message:
        req = _parse(_nri.SynchronizeRequest, call.payload)
        with self._sync_lock:
            parts = self._sync
            if parts is None or parts.generation != call.generation:
                parts = _SyncParts(call.generation, call.started, call.started + call.budget_s)
            parts.parts += 1
            parts.size += len(call.payload)
            if parts.size > self._max_sync_bytes or parts.parts > MAX_SYNC_PARTS:
                self._sync = None
                raise RpcError(
                    CODE_RESOURCE_EXHAUSTED,
                    f"vfhotplug: split Synchronize refused after {parts.parts} parts and {parts.size} bytes "
                    f"(limits: {MAX_SYNC_PARTS} parts, {self._max_sync_bytes} bytes); the runtime keeps "
                    "sending parts with more=true: check its NRI version and logs",
                )
            parts.pods.extend(_pod(p) for p in req.pods)
            parts.containers.extend(_container(c) for c in req.containers)
            if req.more:
                # v0.8+: every part but the last is answered more=true with no updates, or the runtime
                # closes the plugin ("plugin does not handle split sync requests").
                self._sync = parts
                log.debug("NRI: Synchronize part %d gathered, more to come", parts.parts)
                return _nri.SynchronizeResponse(more=True)
            self._sync = None
        # One runtime deadline covers all parts: count from the first, never past the last's.
        deadline = min(parts.deadline, call.started + call.budget_s)
        ctx = EventContext("synchronize", parts.started, deadline - parts.started, self.runtime_info)
        fn = getattr(self._plugin, "synchronize", None)
        updates = (
            self._guarded("Synchronize", None, fn, parts.pods, parts.containers, ctx)
            if callable(fn)
            else None
        )
        resp = _nri.SynchronizeResponse()
        resp.update.extend(_update_pb(u) for u in _updates("synchronize", updates))
        if parts.parts > 1:
            log.info(
                "NRI: Synchronize of %d pods and %d containers came in %d parts",
                len(parts.pods),
                len(parts.containers),
                parts.parts,
            )
        self.synchronized.set()
        return resp

    def _shutdown(self, call: _Call) -> Message:
        log.info("NRI: runtime asked the plugin to shut down")
        self._stop.set()
        return _nri.Empty()

    def _state_change(self, call: _Call) -> Message:
        req = _parse(_nri.StateChangeEvent, call.payload)
        route = _BY_EVENT.get(req.event)
        if route is None or not self._subscribed(route.event):
            log.debug("NRI: ignoring unsubscribed event %d", req.event)
            return _nri.Empty()
        self._deliver(route, req.pod, req.container, call)
        return _nri.Empty()

    def _dedicated(self, route: _EventRoute, call: _Call) -> Message:
        if not self._subscribed(route.event):
            # v0.12 runtimes take Unimplemented as "use StateChange" (pkg/adaptation/plugin_type.go);
            # they only call subscribed events, so this answers a confused or probing peer.
            raise RpcError(
                CODE_UNIMPLEMENTED, f"{PLUGIN_SERVICE}/{route.rpc}: not subscribed to {route.handler}"
            )
        req = _parse(route.request, call.payload)
        # The generated request classes share no typed base; each has pod (and container if with_container).
        pod = getattr(req, "pod")  # noqa: B009
        container = getattr(req, "container") if route.with_container else None  # noqa: B009
        self._deliver(route, pod, container, call)
        return route.response()

    def _deliver(
        self, route: _EventRoute, pod_pb: _nri.PodSandbox, container_pb: _nri.Container | None, call: _Call
    ) -> None:
        fn = getattr(self._plugin, route.handler)
        pod = _pod(pod_pb)
        ctx = self._context(route.handler, call)
        if route.with_container:
            self._timed(ctx, pod, fn, pod, _container(container_pb or _nri.Container()), ctx)
        else:
            self._timed(ctx, pod, fn, pod, ctx)

    def _create_container(self, call: _Call) -> Message:
        req = _parse(_nri.CreateContainerRequest, call.payload)
        pod = _pod(req.pod)
        ctx = self._context("create_container", call)
        fn = getattr(self._plugin, "create_container", None)
        adjust = self._timed(ctx, pod, fn, pod, _container(req.container), ctx) if callable(fn) else None
        resp = _nri.CreateContainerResponse()
        if adjust is not None:
            if not isinstance(adjust, ContainerAdjustment):
                raise RpcError(
                    CODE_UNKNOWN,
                    f"create_container returned {type(adjust).__name__}, not ContainerAdjustment",
                )
            try:
                resp.adjust.CopyFrom(_adjustment_pb(adjust, ctx.runtime))
            except RuntimeTooOld as e:
                # Failing the container beats starting it without the devices the plugin meant to give.
                log.error("NRI: create_container for pod %s: %s", pod.ref, e)
                raise RpcError(CODE_UNKNOWN, f"vfhotplug: create_container for pod {pod.ref}: {e}") from e
        return resp

    _methods: Mapping[str, Callable[[Stub, _Call], Message]] = {
        "Configure": _configure,
        "Synchronize": _synchronize,
        "Shutdown": _shutdown,
        "StateChange": _state_change,
        "CreateContainer": _create_container,
        **{r.rpc: _dedicated_rpc(r) for r in _ROUTES},
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
        ips=tuple(pb.ips),
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


def _adjustment_pb(adj: ContainerAdjustment, runtime: RuntimeInfo) -> _nri.ContainerAdjustment:
    if adj.cdi_devices and not supports_cdi_devices(runtime):
        # An old runtime skips field 8 unseen: the container would start without the devices.
        raise RuntimeTooOld(
            f"the adjustment asks for CDI devices {list(adj.cdi_devices)}, but {runtime.ref} has no "
            "CDI_devices field (NRI v0.8+) and would drop them silently; check "
            "nri_types.supports_cdi_devices(ctx.runtime) before asking for CDI devices"
        )
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
    pb.CDI_devices.extend(_nri.CDIDevice(name=name) for name in adj.cdi_devices)
    return pb


def _updates(event: str, value: object) -> list[ContainerUpdate]:
    """A handler's container updates: None for none, else a sequence of ContainerUpdate."""
    if value is None:
        return []
    if isinstance(value, (list, tuple)) and all(isinstance(u, ContainerUpdate) for u in value):
        return list(value)
    raise RpcError(
        CODE_UNKNOWN, f"{event} returned {type(value).__name__}, not None or a list of ContainerUpdate"
    )


def _update_pb(update: ContainerUpdate) -> _nri.ContainerUpdate:
    return _nri.ContainerUpdate(container_id=update.container_id, ignore_failure=update.ignore_failure)


def _parse(cls: type[_M], payload: bytes) -> _M:
    msg = cls()
    try:
        msg.ParseFromString(payload)
    except DecodeError as e:
        raise RpcError(CODE_INVALID_ARGUMENT, f"cannot decode {cls.__name__}: {e}") from e
    return msg


__all__ = [
    "DEFAULT_SOCKET",
    "NRI_API_VERSION",
    "ConnectionClosed",
    "EventContext",
    "RuntimeTooOld",
    "Stub",
    "StubError",
    "event_mask",
]
