"""NRI protobuf messages to the plain records of `vm_side.runtime_model` and back, at the stub's edge."""

from __future__ import annotations

from typing import TypeVar

from google.protobuf.message import DecodeError, Message

from nri_plugin.nri_pb import nri_pb2 as _nri
from nri_plugin.ttrpc import CODE_INVALID_ARGUMENT, CODE_UNKNOWN, RpcError
from vm_side.runtime_model import (
    ContainerAdjustment,
    ContainerInfo,
    ContainerUpdate,
    PodInfo,
    RuntimeInfo,
    supports_cdi_devices,
)

_M = TypeVar("_M", bound=Message)


class RuntimeTooOld(Exception):
    """A handler asked for something the runtime's NRI cannot carry (a programming error in the plugin)."""


def parse(cls: type[_M], payload: bytes) -> _M:
    """Raises RpcError INVALID_ARGUMENT naming the message when `payload` does not decode."""
    msg = cls()
    try:
        msg.ParseFromString(payload)
    except DecodeError as e:
        raise RpcError(CODE_INVALID_ARGUMENT, f"cannot decode {cls.__name__}: {e}") from e
    return msg


def pod_info(pb: _nri.PodSandbox) -> PodInfo:
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


def container_info(pb: _nri.Container) -> ContainerInfo:
    return ContainerInfo(
        id=pb.id,
        pod_id=pb.pod_sandbox_id,
        name=pb.name,
        annotations=dict(pb.annotations),
        labels=dict(pb.labels),
        env=tuple(pb.env),
        pid=pb.pid,
    )


def adjustment_pb(adj: ContainerAdjustment, runtime: RuntimeInfo) -> _nri.ContainerAdjustment:
    """Raises RuntimeTooOld when `runtime` would drop part of the adjustment unseen."""
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


def container_updates(event: str, value: object) -> list[ContainerUpdate]:
    """A handler's container updates: None for none, else a sequence of ContainerUpdate."""
    if value is None:
        return []
    if isinstance(value, (list, tuple)) and all(isinstance(u, ContainerUpdate) for u in value):
        return list(value)
    raise RpcError(
        CODE_UNKNOWN, f"{event} returned {type(value).__name__}, not None or a list of ContainerUpdate"
    )


def update_pb(update: ContainerUpdate) -> _nri.ContainerUpdate:
    return _nri.ContainerUpdate(container_id=update.container_id, ignore_failure=update.ignore_failure)
