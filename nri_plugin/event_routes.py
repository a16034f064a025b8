"""The NRI pod and container events as one table: the plugin method each reaches, its event number and
the RPCs that carry it (StateChange up to v0.11, a dedicated RPC from v0.12), and the subscription mask
derived from which handlers a plugin defines."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from google.protobuf.message import Message

from nri_plugin.nri_pb import nri_pb2 as _nri
from vm_side.runtime_model import NRI_V0_6_1, NRI_V0_10_0, NriVersion, RuntimeInfo


@dataclass(frozen=True)
class EventRoute:
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
# RPCs both go through it. CreateContainer answers an adjustment and has its own method.
ROUTES: tuple[EventRoute, ...] = (
    EventRoute(
        "run_pod_sandbox", _nri.RUN_POD_SANDBOX, "RunPodSandbox",
        _nri.RunPodSandboxRequest, _nri.RunPodSandboxResponse, False,
    ),
    EventRoute(
        "stop_pod_sandbox", _nri.STOP_POD_SANDBOX, "StopPodSandbox",
        _nri.StopPodSandboxRequest, _nri.StopPodSandboxResponse, False,
    ),
    EventRoute(
        "remove_pod_sandbox", _nri.REMOVE_POD_SANDBOX, "RemovePodSandbox",
        _nri.RemovePodSandboxRequest, _nri.RemovePodSandboxResponse, False,
    ),
    EventRoute(
        "update_pod_sandbox", _nri.UPDATE_POD_SANDBOX, "UpdatePodSandbox",
        _nri.UpdatePodSandboxRequest, _nri.UpdatePodSandboxResponse, False,
        since=NRI_V0_10_0, state_change=False,
    ),
    EventRoute(
        "post_update_pod_sandbox", _nri.POST_UPDATE_POD_SANDBOX, "PostUpdatePodSandbox",
        _nri.PostUpdatePodSandboxRequest, _nri.PostUpdatePodSandboxResponse, False,
        since=NRI_V0_10_0,
    ),
    EventRoute(
        "post_create_container", _nri.POST_CREATE_CONTAINER, "PostCreateContainer",
        _nri.PostCreateContainerRequest, _nri.PostCreateContainerResponse, True,
    ),
    EventRoute(
        "start_container", _nri.START_CONTAINER, "StartContainer",
        _nri.StartContainerRequest, _nri.StartContainerResponse, True,
    ),
    EventRoute(
        "post_start_container", _nri.POST_START_CONTAINER, "PostStartContainer",
        _nri.PostStartContainerRequest, _nri.PostStartContainerResponse, True,
    ),
    EventRoute(
        "post_update_container", _nri.POST_UPDATE_CONTAINER, "PostUpdateContainer",
        _nri.PostUpdateContainerRequest, _nri.PostUpdateContainerResponse, True,
    ),
    EventRoute(
        "remove_container", _nri.REMOVE_CONTAINER, "RemoveContainer",
        _nri.RemoveContainerRequest, _nri.RemoveContainerResponse, True,
    ),
)  # fmt: skip
# StateChange's event number -> its route.
STATE_CHANGE_ROUTES: Mapping[int, EventRoute] = {r.event: r for r in ROUTES if r.state_change}

# Handler method name -> NRI event number; the subscription bit of event E is 1 << (E - 1).
EVENT_HANDLERS: Mapping[str, int] = {
    **{r.handler: r.event for r in ROUTES},
    "create_container": _nri.CREATE_CONTAINER,
}
# Events a runtime older than this NRI version would refuse in the mask (it fails Configure on them).
_EVENT_SINCE: Mapping[int, NriVersion] = {r.event: r.since for r in ROUTES}


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


def subscribed(mask: int, event: int) -> bool:
    return bool(mask & (1 << (event - 1)))
