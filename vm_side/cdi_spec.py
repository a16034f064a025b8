"""A pod's CDI spec as data, its JSON form and its validator (pure).

CDI (the Container Device Interface, github.com/cncf-tags/container-device-interface SPEC.md) lets a runtime
inject named devices from spec files in its CDI folders. Each pod with dpdk-mode VFs gets one spec of kind
`vfhotplug.io/vf` with one device per dpdk VF (its `/dev/vfio/<group>` node) and the pod-wide edits
(`/dev/vfio/vfio`, env, mounts) at spec level, which the runtime applies when any device of the spec is asked
for. Kernel- and vpp-mode VFs have no node to inject (CDI refuses a device without edits): their env and
mounts come with the spec-level edits of a pod that has a dpdk VF, or inline in the adjustment otherwise.

Versions: a runtime refuses a spec whose `cdiVersion` is older than the features it uses need, and older
runtimes refuse versions newer than they know (podman 4.3 reads up to 0.5.0), so a spec is written with the
lowest version its content needs.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, replace

from vm_side.demand import Mode
from vm_side.pod_record import PodRecord, VfBinding
from vm_side.runtime_model import ContainerAdjustment, Device, Mount, device_node_json

VENDOR = "vfhotplug.io"
CLASS = "vf"
KIND = f"{VENDOR}/{CLASS}"
VFIO_CONTAINER_NODE = "/dev/vfio/vfio"

# Released CDI spec versions, oldest first, and the features that first need each (SPEC.md's table).
KNOWN_VERSIONS = ("0.3.0", "0.4.0", "0.5.0", "0.6.0", "0.7.0", "0.8.0", "1.0.0", "1.1.0")
_MOUNT_TYPE_SINCE = "0.4.0"  # Mount.type
_DIGIT_FIRST_NAME_SINCE = "0.5.0"  # a device name starting with a digit (pod uids often do)
_DOTTED_CLASS_SINCE = "0.6.0"  # a dot in the kind's class segment

_DNS_LABEL_RE = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")
_CLASS_RE = re.compile(r"[A-Za-z]([A-Za-z0-9_.-]{0,61}[A-Za-z0-9])?")
_DEVICE_NAME_RE = re.compile(r"[A-Za-z0-9]([A-Za-z0-9_.:-]*[A-Za-z0-9])?")
_ENV_NAME_RE = re.compile(r"[^=\x00]+")
_NODE_TYPES = ("b", "c", "u", "p")


class CdiSpecError(ValueError):
    """A CDI spec breaks a rule of the CDI spec; the message names the field and the rule."""


@dataclass(frozen=True)
class CdiEdits:
    """OCI edits a runtime applies: CDI's `containerEdits` (env, deviceNodes, mounts)."""

    env: tuple[tuple[str, str], ...] = ()
    devices: tuple[Device, ...] = ()
    mounts: tuple[Mount, ...] = ()

    @property
    def empty(self) -> bool:
        return not (self.env or self.devices or self.mounts)


@dataclass(frozen=True)
class CdiDevice:
    name: str
    edits: CdiEdits


@dataclass(frozen=True)
class CdiSpec:
    version: str
    kind: str
    devices: tuple[CdiDevice, ...]
    edits: CdiEdits = CdiEdits()

    def qualified_names(self) -> tuple[str, ...]:
        return tuple(qualified_name(d.name, self.kind) for d in self.devices)


def qualified_name(device: str, kind: str = KIND) -> str:
    """How a runtime is asked for a device: `vfhotplug.io/vf=<name>`."""
    return f"{kind}={device}"


def device_name(pod_uid: str, vf: VfBinding) -> str:
    """A VF's device name: the pod uid (or container id) and the VF's name in the pod, e.g. `<uid>-net1`.

    Deterministic, so a user can name the device before the spec exists."""
    return f"{pod_uid}-{vf.slot.ifname}"


def cdi_vfs(rec: PodRecord) -> tuple[VfBinding, ...]:
    """The pod's VFs that are CDI devices: those with a vfio group node (dpdk mode)."""
    return tuple(vf for vf in rec.vfs if vf.slot.mode is Mode.DPDK)


def cdi_device_names(rec: PodRecord) -> tuple[str, ...]:
    """Qualified names of the pod's CDI devices; empty when the pod has none (no spec is written)."""
    return tuple(qualified_name(device_name(rec.pod_uid, vf)) for vf in cdi_vfs(rec))


def build_cdi_spec(rec: PodRecord, inline: ContainerAdjustment) -> CdiSpec:
    """The pod's spec from the adjustment its containers would get inline (`adjustment.build_adjustment`):
    each dpdk VF's group node goes to its device, every other node, env and mount to the spec level.

    Raises:
        CdiSpecError: the pod has no dpdk VF, or the result breaks a CDI rule (e.g. an ifname ending in
            '-' makes no valid device name).
    """
    vfs = cdi_vfs(rec)
    if not vfs:
        raise CdiSpecError(f"pod {rec.pod_uid}: no dpdk-mode VF, so no device for a CDI spec")
    by_path = {d.path: d for d in inline.devices}
    group_paths = set()
    devices = []
    for vf in vfs:
        path = f"/dev/vfio/{vf.iommu_group}"
        if vf.iommu_group is None or path not in by_path:
            raise CdiSpecError(
                f"pod {rec.pod_uid}: VF {vf.guest_pci} has no vfio group node in its adjustment"
            )
        group_paths.add(path)
        devices.append(CdiDevice(device_name(rec.pod_uid, vf), CdiEdits(devices=(by_path[path],))))
    shared = CdiEdits(
        env=tuple(sorted(inline.env.items())),
        devices=tuple(d for d in inline.devices if d.path not in group_paths),
        mounts=inline.mounts,
    )
    draft = CdiSpec(KNOWN_VERSIONS[0], KIND, tuple(devices), shared)
    spec = replace(draft, version=required_version(draft))
    validate(spec)
    return spec


def _version_key(version: str) -> tuple[int, ...]:
    return tuple(int(p) for p in version.split("."))


def _all_edits(spec: CdiSpec) -> Iterable[CdiEdits]:
    yield spec.edits
    for d in spec.devices:
        yield d.edits


def required_version(spec: CdiSpec) -> str:
    """The lowest CDI version that has every feature `spec` uses."""
    needs = [KNOWN_VERSIONS[0]]
    if any(m.type for e in _all_edits(spec) for m in e.mounts):
        needs.append(_MOUNT_TYPE_SINCE)
    if any(d.name[:1].isdigit() for d in spec.devices):
        needs.append(_DIGIT_FIRST_NAME_SINCE)
    if "." in spec.kind.partition("/")[2]:
        needs.append(_DOTTED_CLASS_SINCE)
    return max(needs, key=_version_key)


def validate(spec: CdiSpec) -> None:
    """Checks what we are about to write against the CDI rules a runtime applies when it loads it.

    Raises:
        CdiSpecError: naming the first broken rule.
    """
    if spec.version not in KNOWN_VERSIONS:
        raise CdiSpecError(
            f"cdiVersion {spec.version!r} is not a released CDI version ({', '.join(KNOWN_VERSIONS)})"
        )
    need = required_version(spec)
    if _version_key(spec.version) < _version_key(need):
        raise CdiSpecError(f"cdiVersion {spec.version} is too old for what the spec uses: it needs {need}")
    _check_kind(spec.kind)
    if not spec.devices:
        raise CdiSpecError(f"kind {spec.kind}: a spec needs at least one device")
    seen: set[str] = set()
    for d in spec.devices:
        if not _DEVICE_NAME_RE.fullmatch(d.name):
            raise CdiSpecError(
                f"device name {d.name!r}: letters, digits and '_', '-', '.', ':' only, "
                "starting and ending with a letter or digit"
            )
        if d.name in seen:
            raise CdiSpecError(f"device name {d.name!r} appears twice in the spec")
        seen.add(d.name)
        if d.edits.empty:
            raise CdiSpecError(f"device {d.name!r} has no edits (runtimes refuse such a device)")
        _check_edits(d.edits, f"device {d.name!r}")
    _check_edits(spec.edits, "spec")


def _check_kind(kind: str) -> None:
    vendor, slash, cls = kind.partition("/")
    labels = vendor.split(".")
    if not slash or not vendor or len(vendor) > 253 or not all(_DNS_LABEL_RE.fullmatch(x) for x in labels):
        raise CdiSpecError(f"kind {kind!r}: the vendor before '/' must be a DNS subdomain like 'vendor.com'")
    if not vendor[0].isalpha():
        raise CdiSpecError(f"kind {kind!r}: the vendor must start with a letter")
    if not _CLASS_RE.fullmatch(cls):
        raise CdiSpecError(
            f"kind {kind!r}: the class after '/' must be 1-63 letters, digits, '_', '-' or '.', "
            "starting with a letter and ending with a letter or digit"
        )


def _check_edits(edits: CdiEdits, where: str) -> None:
    for name, _value in edits.env:
        if not _ENV_NAME_RE.fullmatch(name):
            raise CdiSpecError(f"{where}: env name {name!r} is empty or holds '='")
    for node in edits.devices:
        if not node.path.startswith("/"):
            raise CdiSpecError(f"{where}: device node path {node.path!r} is not absolute")
        if node.type not in _NODE_TYPES:
            raise CdiSpecError(
                f"{where}: device node {node.path} has type {node.type!r}, not one of b, c, u, p"
            )
        if node.type != "p" and node.major <= 0:
            # Without a major number the runtime stats the node on its own host, which may not have it.
            raise CdiSpecError(f"{where}: device node {node.path} has no major number")
    for m in edits.mounts:
        for what, path in (("containerPath", m.destination), ("hostPath", m.source)):
            if not path.startswith("/"):
                raise CdiSpecError(f"{where}: mount {what} {path!r} is not absolute")


def spec_to_json(spec: CdiSpec) -> dict[str, object]:
    """The spec as CDI JSON (field names of SPEC.md; empty lists left out)."""
    out: dict[str, object] = {
        "cdiVersion": spec.version,
        "kind": spec.kind,
        "devices": [{"name": d.name, "containerEdits": _edits_json(d.edits)} for d in spec.devices],
    }
    if not spec.edits.empty:
        out["containerEdits"] = _edits_json(spec.edits)
    return out


def _edits_json(edits: CdiEdits) -> dict[str, object]:
    out: dict[str, object] = {}
    if edits.env:
        out["env"] = [f"{k}={v}" for k, v in edits.env]
    if edits.devices:
        # CDI's deviceNodes share the OCI field names; permissions left out: CDI defaults to "rwm" and
        # adds the device cgroup allow rule itself.
        out["deviceNodes"] = [device_node_json(d) for d in edits.devices]
    if edits.mounts:
        out["mounts"] = [_mount_json(m) for m in edits.mounts]
    return out


def _mount_json(m: Mount) -> dict[str, object]:
    out: dict[str, object] = {
        "hostPath": m.source,
        "containerPath": m.destination,
        "options": list(m.options),
    }
    if m.type:
        out["type"] = m.type
    return out
