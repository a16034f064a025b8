"""NRI objects as plain records: the stub converts protobuf to these at the edge and back, so plugin
code never handles generated classes."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from nri_plugin.nri_pb import nri_pb2 as _nri


@dataclass(frozen=True)
class PodInfo:
    id: str
    name: str
    uid: str
    namespace: str
    annotations: Mapping[str, str] = field(default_factory=dict)
    labels: Mapping[str, str] = field(default_factory=dict)
    netns: str | None = None  # only on RunPodSandbox and Synchronize; Stop/Remove carry none
    pid: int = 0

    @property
    def ref(self) -> str:
        """How logs and errors name the pod."""
        return f"{self.namespace}/{self.name} (uid {self.uid})"

    @classmethod
    def from_pb(cls, pb: _nri.PodSandbox) -> PodInfo:
        netns = next((ns.path for ns in pb.linux.namespaces if ns.type == "network" and ns.path), None)
        return cls(
            id=pb.id,
            name=pb.name,
            uid=pb.uid,
            namespace=pb.namespace,
            annotations=dict(pb.annotations),
            labels=dict(pb.labels),
            netns=netns,
            pid=pb.pid,
        )


@dataclass(frozen=True)
class ContainerInfo:
    id: str
    pod_id: str
    name: str
    annotations: Mapping[str, str] = field(default_factory=dict)
    labels: Mapping[str, str] = field(default_factory=dict)
    env: tuple[str, ...] = ()
    pid: int = 0

    @classmethod
    def from_pb(cls, pb: _nri.Container) -> ContainerInfo:
        return cls(
            id=pb.id,
            pod_id=pb.pod_sandbox_id,
            name=pb.name,
            annotations=dict(pb.annotations),
            labels=dict(pb.labels),
            env=tuple(pb.env),
            pid=pb.pid,
        )


@dataclass(frozen=True)
class Mount:
    destination: str
    source: str
    type: str = "bind"
    options: tuple[str, ...] = ("rbind", "ro")


@dataclass(frozen=True)
class Device:
    """A device node to create in the container; the runtime also allows it in the device cgroup."""

    path: str
    major: int
    minor: int
    type: str = "c"
    file_mode: int | None = None
    uid: int | None = None
    gid: int | None = None


@dataclass(frozen=True)
class ContainerAdjustment:
    annotations: Mapping[str, str] = field(default_factory=dict)
    env: Mapping[str, str] = field(default_factory=dict)
    mounts: tuple[Mount, ...] = ()
    devices: tuple[Device, ...] = ()

    def to_pb(self) -> _nri.ContainerAdjustment:
        pb = _nri.ContainerAdjustment()
        pb.annotations.update(self.annotations)
        pb.env.extend(_nri.KeyValue(key=k, value=v) for k, v in self.env.items())
        pb.mounts.extend(
            _nri.Mount(destination=m.destination, source=m.source, type=m.type, options=list(m.options))
            for m in self.mounts
        )
        for d in self.devices:
            dev = pb.linux.devices.add(path=d.path, type=d.type, major=d.major, minor=d.minor)
            if d.file_mode is not None:
                dev.file_mode.value = d.file_mode
            if d.uid is not None:
                dev.uid.value = d.uid
            if d.gid is not None:
                dev.gid.value = d.gid
        return pb
