"""NRI objects as plain records: the stub converts protobuf to these at the edge and back, so plugin
code (and the OCI hooks, which write the same adjustment into config.json) never handle generated classes."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

# An NRI (module) version as (major, minor, patch); compared as tuples.
NriVersion = tuple[int, int, int]
NRI_V0_6_1: NriVersion = (0, 6, 1)  # containerd 1.7.24: the oldest this project speaks
NRI_V0_8_0: NriVersion = (0, 8, 0)  # containerd 1.7.26+, 2.0, 2.1: timeouts, split sync, pod IPs, CDI
NRI_V0_10_0: NriVersion = (0, 10, 0)  # containerd 2.2.0: UpdatePodSandbox, events 12-14
NRI_V0_12_0: NriVersion = (0, 12, 0)  # containerd 2.3: dedicated per-event RPCs, NRI_version fields

# The runtime's defaults when its Configure says nothing (NRI v0.6.1 sends no timeouts).
DEFAULT_REGISTRATION_TIMEOUT_S = 5.0
DEFAULT_REQUEST_TIMEOUT_S = 2.0

# How RuntimeInfo.nri_version was found: sent by the runtime (v0.12+), looked up from the runtime's own
# version, implied by fields only newer runtimes send (timeouts: v0.8+), or assumed (the oldest spoken).
NriVersionBasis = Literal["sent", "runtime version", "timeouts", "assumed"]

_VERSION_RE = re.compile(r"v?(\d+)\.(\d+)\.(\d+)")

# The first release of each runtime that embeds a newer NRI, per the runtimes' go.mod (as containerd/nri's
# own version inference has it). Later runtimes send NRI_version themselves, so the table can stop here.
_RUNTIME_NRI_STEPS: Mapping[str, tuple[tuple[tuple[int, int, int], NriVersion], ...]] = {
    "containerd": (((1, 7, 26), NRI_V0_8_0), ((2, 2, 0), NRI_V0_10_0), ((2, 2, 1), (0, 11, 0))),
    "cri-o": (((1, 32, 0), (0, 9, 0)), ((1, 34, 0), NRI_V0_10_0), ((1, 35, 0), (0, 11, 0))),
}


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
    ips: tuple[str, ...] = ()  # PodSandbox.ips: NRI v0.8+ only; always empty from containerd 1.7.24

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


def device_node_json(d: Device) -> dict[str, object]:
    """A device node in the JSON shape shared by the OCI runtime spec's linux.devices and CDI's deviceNodes."""
    out: dict[str, object] = {"path": d.path, "type": d.type, "major": d.major, "minor": d.minor}
    for key, value in (("fileMode", d.file_mode), ("uid", d.uid), ("gid", d.gid)):
        if value is not None:
            out[key] = value
    return out


@dataclass(frozen=True)
class ContainerAdjustment:
    annotations: Mapping[str, str] = field(default_factory=dict)
    env: Mapping[str, str] = field(default_factory=dict)
    mounts: tuple[Mount, ...] = ()
    devices: tuple[Device, ...] = ()
    # Fully qualified CDI device names ("vendor.com/class=name"). Only runtimes for which
    # supports_cdi_devices() holds read them; the stub refuses to send them to any other.
    cdi_devices: tuple[str, ...] = ()


@dataclass(frozen=True)
class ContainerUpdate:
    """An update a handler asks for on another container (returned from synchronize).

    Resource changes are not modelled yet: an update names the container only."""

    container_id: str
    ignore_failure: bool = False


@dataclass(frozen=True)
class RuntimeInfo:
    """What the runtime said about itself in Configure, for handlers to decide what they may ask for."""

    name: str = ""
    version: str = ""
    nri_version: NriVersion = NRI_V0_6_1  # the newest NRI the runtime is known to speak (v0.6.1 at least)
    nri_version_basis: NriVersionBasis = "assumed"
    registration_timeout_s: float = DEFAULT_REGISTRATION_TIMEOUT_S
    request_timeout_s: float = DEFAULT_REQUEST_TIMEOUT_S
    timeouts_sent: bool = False  # False: the defaults above stand in (NRI v0.6.1 sends none)

    @property
    def nri_version_text(self) -> str:
        return "v{}.{}.{}".format(*self.nri_version)

    @property
    def ref(self) -> str:
        """How logs and errors name the runtime."""
        who = f"{self.name} {self.version}".strip() or "the runtime"
        return f"{who} (NRI {self.nri_version_text}, {self.nri_version_basis})"


def supports_cdi_devices(runtime: RuntimeInfo) -> bool:
    """Whether the runtime reads ContainerAdjustment.CDI_devices (NRI v0.8+); older ones drop it unseen."""
    return runtime.nri_version >= NRI_V0_8_0


def parse_nri_version(text: str) -> NriVersion | None:
    """The version in "v0.12.0" or "v0.12.1-0.2025...-abc"; None for "", "(devel)", "0.0.0-unknown"."""
    m = _VERSION_RE.match(text.strip())
    if m is None:
        return None
    version = (int(m[1]), int(m[2]), int(m[3]))
    return version if version != (0, 0, 0) else None


def runtime_info(
    name: str,
    version: str,
    *,
    nri_version: str = "",
    registration_timeout_ms: int = 0,
    request_timeout_ms: int = 0,
) -> RuntimeInfo:
    """Builds RuntimeInfo from the fields of a ConfigureRequest (0 or "" where the runtime sent none)."""
    found: tuple[NriVersion, NriVersionBasis]
    if nri_version:
        # Only v0.12+ runtimes send the field at all, so even an unreadable value says that much.
        found = (parse_nri_version(nri_version) or NRI_V0_12_0, "sent")
    else:
        candidates: list[tuple[NriVersion, NriVersionBasis]] = []
        steps = _RUNTIME_NRI_STEPS.get(name.lower())
        release = parse_nri_version(version)
        if steps is not None and release is not None:
            known = [nri for first, nri in steps if release >= first]
            candidates.append((max(known, default=NRI_V0_6_1), "runtime version"))
        if registration_timeout_ms > 0 or request_timeout_ms > 0:
            candidates.append((NRI_V0_8_0, "timeouts"))
        candidates.append((NRI_V0_6_1, "assumed"))
        # The newest wins; on a tie the first, more specific, basis is kept.
        found = max(candidates, key=lambda c: c[0])
    return RuntimeInfo(
        name=name,
        version=version,
        nri_version=found[0],
        nri_version_basis=found[1],
        registration_timeout_s=(
            registration_timeout_ms / 1000 if registration_timeout_ms > 0 else DEFAULT_REGISTRATION_TIMEOUT_S
        ),
        request_timeout_s=request_timeout_ms / 1000 if request_timeout_ms > 0 else DEFAULT_REQUEST_TIMEOUT_S,
        timeouts_sent=registration_timeout_ms > 0 or request_timeout_ms > 0,
    )
