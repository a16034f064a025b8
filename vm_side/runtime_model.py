"""NRI objects as plain records: the stub converts protobuf to these at the edge and back, so plugin
code (and the OCI hooks, which write the same adjustment into config.json) never handle generated classes."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field


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


@dataclass(frozen=True)
class ContainerInfo:
    id: str
    pod_id: str
    name: str
    annotations: Mapping[str, str] = field(default_factory=dict)
    labels: Mapping[str, str] = field(default_factory=dict)
    env: tuple[str, ...] = ()
    pid: int = 0


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
