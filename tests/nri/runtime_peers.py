"""Runtime peers that behave, on the wire, as newer containerd releases do (after containerd/nri's
pkg/adaptation): Containerd21 for NRI v0.8 (containerd 2.0/2.1), Containerd23 for NRI v0.12.

Each keeps only the runtime's rules a plugin can observe: what Configure carries, how Synchronize is split
and checked, which RPC carries an event and when it falls back. Written for these tests, independently of
the stub's own tables, so the stub is not checked against itself.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from google.protobuf.message import Message

from nri_plugin.framing import MAX_TTRPC_DATA
from nri_plugin.nri_pb import nri_pb2 as nri
from nri_plugin.nri_pb import ttrpc_pb2 as ttrpc
from tests.nri.fake_runtime import FakeRuntime, Reply

PLUGIN_SERVICE = "nri.pkg.api.v1alpha1.Plugin"
MIN_OBJECTS_PER_PART = 8  # the runtime never splits below this many pods + containers a part


class SplitSyncRefused(AssertionError):
    """The plugin answered a part of a split Synchronize in a way the runtime closes it for."""


@dataclass
class SyncResult:
    parts: list[nri.SynchronizeRequest] = field(default_factory=list)
    answers: list[nri.SynchronizeResponse] = field(default_factory=list)
    part_sizes: list[int] = field(default_factory=list)  # ttrpc request bytes of each part

    @property
    def final(self) -> nri.SynchronizeResponse:
        return self.answers[-1]


class Containerd21(FakeRuntime):
    """containerd 2.1.x: NRI v0.8.0."""

    runtime_version = "2.1.9~ds1"
    nri_version = ""  # v0.8 has no NRI_version field

    def __init__(self, sock: socket.socket) -> None:
        super().__init__(sock)
        self.request_timeout_ms = 2000
        self.events = 0

    def handshake(
        self, config: str = "", *, registration_timeout_ms: int = 5000, request_timeout_ms: int = 2000
    ) -> nri.ConfigureResponse:
        """Configure as this runtime sends it (after accept_registration)."""
        self.request_timeout_ms = request_timeout_ms
        resp = self.configure(
            config,
            runtime_name="containerd",
            runtime_version=self.runtime_version,
            registration_timeout_ms=registration_timeout_ms,
            request_timeout_ms=request_timeout_ms,
            nri_version=self.nri_version,
        )
        # A mask of 0 subscribes to every event the runtime knows.
        self.events = resp.events or 0x7FF
        return resp

    def subscribed(self, event: int) -> bool:
        return bool(self.events & (1 << (event - 1)))

    def synchronize(
        self,
        pods: list[nri.PodSandbox],
        containers: list[nri.Container],
        *,
        max_message: int = MAX_TTRPC_DATA,
    ) -> SyncResult:
        """Sends pods and containers as the runtime does: whole if the message fits, else in parts of
        fewer objects, every part but the last marked more=true, all under one request deadline."""
        deadline = time.monotonic() + self.request_timeout_ms / 1000
        result = SyncResult()
        pods_left, ctrs_left = list(pods), list(containers)
        pods_per, ctrs_per = len(pods), len(containers)
        while True:
            req = nri.SynchronizeRequest(
                pods=pods_left[:pods_per],
                containers=ctrs_left[:ctrs_per],
                more=len(pods_left) > pods_per or len(ctrs_left) > ctrs_per,
            )
            remaining = int((deadline - time.monotonic()) * 1e9)
            envelope = ttrpc.Request(
                service=PLUGIN_SERVICE,
                method="Synchronize",
                payload=req.SerializeToString(),
                timeout_nano=remaining,
            ).SerializeToString()
            if len(envelope) > max_message:
                # ttrpc refuses the oversized message before sending; the runtime retries with fewer
                # objects, scaled down by the size ratio (at most 0.9).
                if pods_per + ctrs_per <= MIN_OBJECTS_PER_PART:
                    raise AssertionError("cannot split the Synchronize any further")
                factor = min(0.9, max_message / len(envelope))
                pods_per, ctrs_per = int(pods_per * factor), int(ctrs_per * factor)
                if pods_per + ctrs_per < MIN_OBJECTS_PER_PART:
                    pods_per = ctrs_per = MIN_OBJECTS_PER_PART // 2
                continue
            reply = self.call_raw(envelope)
            if reply.code != 0:
                raise AssertionError(f"Synchronize part failed: {reply.code} {reply.message}")
            answer = nri.SynchronizeResponse.FromString(reply.payload)
            result.parts.append(req)
            result.answers.append(answer)
            result.part_sizes.append(len(envelope))
            if not req.more:
                return result
            if answer.update or answer.more != req.more:
                raise SplitSyncRefused("plugin does not handle split sync requests")
            pods_left, ctrs_left = pods_left[pods_per:], ctrs_left[ctrs_per:]
            pods_per, ctrs_per = min(pods_per, len(pods_left)), min(ctrs_per, len(ctrs_left))

    def state_change(
        self, event: nri.Event, pod: nri.PodSandbox, container: nri.Container | None = None
    ) -> Reply | None:
        """How v0.8 delivers a pod or container event without an answer: StateChange, if subscribed."""
        if not self.subscribed(event):
            return None
        evt = nri.StateChangeEvent(event=event, pod=pod)
        if container is not None:
            evt.container.CopyFrom(container)
        return self.call("StateChange", evt.SerializeToString(), timeout_nano=self.request_timeout_ms * 10**6)


_Build = Callable[[nri.PodSandbox, nri.Container], Message]


# Event -> (dedicated RPC, how its request is built, whether StateChange is the fallback).
_DEDICATED: dict[nri.Event, tuple[str, _Build, bool]] = {
    nri.RUN_POD_SANDBOX: ("RunPodSandbox", lambda p, c: nri.RunPodSandboxRequest(pod=p), True),
    nri.STOP_POD_SANDBOX: ("StopPodSandbox", lambda p, c: nri.StopPodSandboxRequest(pod=p), True),
    nri.REMOVE_POD_SANDBOX: ("RemovePodSandbox", lambda p, c: nri.RemovePodSandboxRequest(pod=p), True),
    nri.UPDATE_POD_SANDBOX: ("UpdatePodSandbox", lambda p, c: nri.UpdatePodSandboxRequest(pod=p), False),
    nri.POST_UPDATE_POD_SANDBOX: (
        "PostUpdatePodSandbox",
        lambda p, c: nri.PostUpdatePodSandboxRequest(pod=p),
        True,
    ),
    nri.POST_CREATE_CONTAINER: (
        "PostCreateContainer",
        lambda p, c: nri.PostCreateContainerRequest(pod=p, container=c),
        True,
    ),
    nri.START_CONTAINER: ("StartContainer", lambda p, c: nri.StartContainerRequest(pod=p, container=c), True),
    nri.POST_START_CONTAINER: (
        "PostStartContainer",
        lambda p, c: nri.PostStartContainerRequest(pod=p, container=c),
        True,
    ),
    nri.POST_UPDATE_CONTAINER: (
        "PostUpdateContainer",
        lambda p, c: nri.PostUpdateContainerRequest(pod=p, container=c),
        True,
    ),
    nri.REMOVE_CONTAINER: (
        "RemoveContainer",
        lambda p, c: nri.RemoveContainerRequest(pod=p, container=c),
        True,
    ),
}
# The response each dedicated RPC must decode as.
RESPONSES: dict[str, type[Message]] = {
    "RunPodSandbox": nri.RunPodSandboxResponse,
    "StopPodSandbox": nri.StopPodSandboxResponse,
    "RemovePodSandbox": nri.RemovePodSandboxResponse,
    "UpdatePodSandbox": nri.UpdatePodSandboxResponse,
    "PostUpdatePodSandbox": nri.PostUpdatePodSandboxResponse,
    "PostCreateContainer": nri.PostCreateContainerResponse,
    "StartContainer": nri.StartContainerResponse,
    "PostStartContainer": nri.PostStartContainerResponse,
    "PostUpdateContainer": nri.PostUpdateContainerResponse,
    "RemoveContainer": nri.RemoveContainerResponse,
}


class Containerd23(Containerd21):
    """containerd 2.3: NRI v0.12.0. Dedicated RPC per event first; once the plugin answers one with
    Unimplemented, that and every later event goes over StateChange (pkg/adaptation/plugin_type.go)."""

    runtime_version = "v2.3.0"
    nri_version = "v0.12.0"

    def __init__(self, sock: socket.socket) -> None:
        super().__init__(sock)
        self.fell_back = False
        self.methods: list[str] = []  # the RPC each delivered event went over

    def handshake(
        self, config: str = "", *, registration_timeout_ms: int = 5000, request_timeout_ms: int = 2000
    ) -> nri.ConfigureResponse:
        resp = super().handshake(
            config, registration_timeout_ms=registration_timeout_ms, request_timeout_ms=request_timeout_ms
        )
        self.events = resp.events or 0x3FFF  # v0.10+: events 1-14
        return resp

    def event(
        self, event: nri.Event, pod: nri.PodSandbox, container: nri.Container | None = None
    ) -> Reply | None:
        """Delivers one pod or container event as v0.12 does; None when the plugin is not subscribed."""
        if not self.subscribed(event):
            return None
        rpc, build, fallback = _DEDICATED[event]
        timeout = self.request_timeout_ms * 10**6
        if not (self.fell_back and fallback):
            req = build(pod, container or nri.Container())
            reply = self.call(rpc, req.SerializeToString(), timeout_nano=timeout)
            if reply.code != 12 or not fallback:
                self.methods.append(rpc)
                return reply
            self.fell_back = True
        evt = nri.StateChangeEvent(event=event, pod=pod)
        if container is not None:
            evt.container.CopyFrom(container)
        self.methods.append("StateChange")
        return self.call("StateChange", evt.SerializeToString(), timeout_nano=timeout)
