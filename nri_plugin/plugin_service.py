"""The Plugin service the runtime calls: Configure, Synchronize, Shutdown, CreateContainer and the pod and
container events (as StateChange or dedicated RPCs, both through `event_routes.ROUTES`), each handed to
the plugin object's handler of that name with the runtime's deadline."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from google.protobuf.message import Message

from nri_plugin.event_routes import ROUTES, STATE_CHANGE_ROUTES, EventRoute, event_mask, subscribed
from nri_plugin.nri_codec import (
    RuntimeTooOld,
    adjustment_pb,
    container_info,
    container_updates,
    parse,
    pod_info,
    update_pb,
)
from nri_plugin.nri_pb import nri_pb2 as _nri
from nri_plugin.split_sync import MAX_SYNC_BYTES, SplitSync
from nri_plugin.ttrpc import CODE_UNIMPLEMENTED, CODE_UNKNOWN, IncomingRequest, RpcError
from vm_side.runtime_model import ContainerAdjustment, PodInfo, RuntimeInfo, runtime_info

log = logging.getLogger(__name__)

PLUGIN_SERVICE = "nri.pkg.api.v1alpha1.Plugin"


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


def _dedicated_rpc(route: EventRoute) -> Callable[[PluginService, _Call], Message]:
    """The method-table entry of one dedicated event RPC: the shared route, bound to its event."""

    def serve(service: PluginService, call: _Call) -> Message:
        return service._dedicated(route, call)

    return serve


class PluginService:
    """Serves one plugin object; `on_shutdown` is called when the runtime asks the plugin to end."""

    def __init__(
        self,
        plugin: object,
        on_shutdown: Callable[[], None],
        budget_warn_share: float = 0.5,
        max_sync_bytes: int = MAX_SYNC_BYTES,
    ) -> None:
        self._plugin = plugin
        self._on_shutdown = on_shutdown
        self._warn_share = budget_warn_share
        self._sync = SplitSync(max_sync_bytes)
        # Until the runtime configures us, assume the oldest runtime (v0.6.1) and its default timeouts.
        self.runtime_info = RuntimeInfo()
        self.mask = event_mask(plugin, self.runtime_info)
        self.config = ""
        self.synchronized = threading.Event()

    def new_connection(self) -> int:
        """Starts serving a new connection; its generation, to hand to `handle`."""
        return self._sync.new_connection()

    def handle(self, req: IncomingRequest, generation: int) -> bytes:
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

    def _configure(self, call: _Call) -> Message:
        req = parse(_nri.ConfigureRequest, call.payload)
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
        self.mask = mask
        self.config = req.config
        log.info(
            "NRI: configured by %s; registration timeout %.1fs, request timeout %.1fs%s",
            info.ref,
            info.registration_timeout_s,
            info.request_timeout_s,
            "" if info.timeouts_sent else " (defaults: the runtime sent none)",
        )
        self._sync.reset()
        fn = getattr(self._plugin, "configure", None)
        if callable(fn):
            _guarded("Configure", None, fn, req.config, req.runtime_name, req.runtime_version)
        return _nri.ConfigureResponse(events=mask)

    def _synchronize(self, call: _Call) -> Message:
        req = parse(_nri.SynchronizeRequest, call.payload)
        deadline = call.started + call.budget_s
        parts = self._sync.add(req, len(call.payload), call.generation, call.started, deadline)
        if parts is None:
            # v0.8+: every part but the last is answered more=true with no updates, or the runtime
            # closes the plugin ("plugin does not handle split sync requests").
            return _nri.SynchronizeResponse(more=True)
        # One runtime deadline covers all parts: count from the first, never past the last's.
        deadline = min(parts.deadline, deadline)
        ctx = EventContext("synchronize", parts.started, deadline - parts.started, self.runtime_info)
        fn = getattr(self._plugin, "synchronize", None)
        updates = (
            _guarded("Synchronize", None, fn, parts.pods, parts.containers, ctx) if callable(fn) else None
        )
        resp = _nri.SynchronizeResponse()
        resp.update.extend(update_pb(u) for u in container_updates("synchronize", updates))
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
        self._on_shutdown()
        return _nri.Empty()

    def _state_change(self, call: _Call) -> Message:
        req = parse(_nri.StateChangeEvent, call.payload)
        route = STATE_CHANGE_ROUTES.get(req.event)
        if route is None or not subscribed(self.mask, route.event):
            log.debug("NRI: ignoring unsubscribed event %d", req.event)
            return _nri.Empty()
        self._deliver(route, req.pod, req.container, call)
        return _nri.Empty()

    def _dedicated(self, route: EventRoute, call: _Call) -> Message:
        if not subscribed(self.mask, route.event):
            # v0.12 runtimes take Unimplemented as "use StateChange" (pkg/adaptation/plugin_type.go);
            # they only call subscribed events, so this answers a confused or probing peer.
            raise RpcError(
                CODE_UNIMPLEMENTED, f"{PLUGIN_SERVICE}/{route.rpc}: not subscribed to {route.handler}"
            )
        req = parse(route.request, call.payload)
        # The generated request classes share no typed base; each has pod (and container if with_container).
        pod = getattr(req, "pod")  # noqa: B009
        container = getattr(req, "container") if route.with_container else None  # noqa: B009
        self._deliver(route, pod, container, call)
        return route.response()

    def _deliver(
        self, route: EventRoute, pod_pb: _nri.PodSandbox, container_pb: _nri.Container | None, call: _Call
    ) -> None:
        fn = getattr(self._plugin, route.handler)
        pod = pod_info(pod_pb)
        ctx = self._context(route.handler, call)
        if route.with_container:
            self._timed(ctx, pod, fn, pod, container_info(container_pb or _nri.Container()), ctx)
        else:
            self._timed(ctx, pod, fn, pod, ctx)

    def _create_container(self, call: _Call) -> Message:
        req = parse(_nri.CreateContainerRequest, call.payload)
        pod = pod_info(req.pod)
        ctx = self._context("create_container", call)
        fn = getattr(self._plugin, "create_container", None)
        adjust = self._timed(ctx, pod, fn, pod, container_info(req.container), ctx) if callable(fn) else None
        resp = _nri.CreateContainerResponse()
        if adjust is not None:
            if not isinstance(adjust, ContainerAdjustment):
                raise RpcError(
                    CODE_UNKNOWN,
                    f"create_container returned {type(adjust).__name__}, not ContainerAdjustment",
                )
            try:
                resp.adjust.CopyFrom(adjustment_pb(adjust, ctx.runtime))
            except RuntimeTooOld as e:
                # Failing the container beats starting it without the devices the plugin meant to give.
                log.error("NRI: create_container for pod %s: %s", pod.ref, e)
                raise RpcError(CODE_UNKNOWN, f"vfhotplug: create_container for pod {pod.ref}: {e}") from e
        return resp

    _methods: Mapping[str, Callable[[PluginService, _Call], Message]] = {
        "Configure": _configure,
        "Synchronize": _synchronize,
        "Shutdown": _shutdown,
        "StateChange": _state_change,
        "CreateContainer": _create_container,
        **{r.rpc: _dedicated_rpc(r) for r in ROUTES},
    }

    def _timed(self, ctx: EventContext, pod: PodInfo, fn: Callable[..., Any], *args: Any) -> Any:
        try:
            return _guarded(ctx.event, pod, fn, *args)
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


def _guarded(event: str, pod: PodInfo | None, fn: Callable[..., Any], *args: Any) -> Any:
    """Runs a plugin handler; its failure becomes an error status naming the event, pod and cause."""
    try:
        return fn(*args)
    except Exception as e:
        where = f" for pod {pod.ref}" if pod else ""
        log.exception("NRI: %s%s failed", event, where)
        raise RpcError(CODE_UNKNOWN, f"vfhotplug: {event}{where} failed: {e}") from e
