"""The OCI side of the hooks, pure: the state a runtime hands a hook, and edits of a runtime config.

Nothing here reads files or calls the lifecycle; `__main__` feeds it what it read and writes back what it
returns. Runtime configs are handled as JSON objects so that every field we do not own survives untouched.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from vm_side.runtime_model import ContainerAdjustment, Device, Mount, device_node_json

JsonObject = dict[str, Any]

# podman names a container's cgroup after its id: `libpod-<id>` (cgroupfs) or `machine.slice:libpod:<id>`
# (systemd); its precreate input carries no other trace of the id.
_PODMAN_CGROUP_RE = re.compile(r"(?:^|[/:])libpod[-:]([0-9a-f]{64})(?:\.scope)?$")


class SpecError(ValueError):
    """The runtime handed us something we cannot use; the message names the field."""


class Stage(StrEnum):
    PRECREATE = "precreate"
    CREATE_RUNTIME = "createRuntime"
    POSTSTOP = "poststop"


@dataclass(frozen=True)
class OciState:
    """The container state every OCI hook reads on stdin (runtime-spec `state`)."""

    id: str
    status: str
    bundle: str
    annotations: Mapping[str, str]
    pid: int | None = None  # absent once the container stopped


def parse_state(doc: object) -> OciState:
    """Raises SpecError naming the field when `doc` is not an OCI state."""
    if not isinstance(doc, dict):
        raise SpecError(f"OCI state on stdin: expected a JSON object, got {type(doc).__name__}")
    cid = doc.get("id")
    if not isinstance(cid, str) or not cid:
        raise SpecError("OCI state on stdin: field 'id' is missing or not a string")
    status = doc.get("status", "")
    bundle = doc.get("bundle", "")
    pid = doc.get("pid")
    if not isinstance(status, str) or not isinstance(bundle, str):
        raise SpecError(f"OCI state of {cid}: fields 'status' and 'bundle' must be strings")
    if pid is not None and (not isinstance(pid, int) or isinstance(pid, bool) or pid < 0):
        raise SpecError(f"OCI state of {cid}: field 'pid' must be a positive integer, got {pid!r}")
    return OciState(cid, status, bundle, annotations_of(doc, f"OCI state of {cid}"), pid or None)


def stage_of(doc: object) -> Stage:
    """Which hook stage a runtime input belongs to, for a hook registered once for several stages.

    podman passes the full runtime config at precreate and a state (with `status`) at the other stages;
    runc and crun report `creating`/`created` during createRuntime and `stopped` at poststop.
    """
    if not isinstance(doc, dict):
        raise SpecError(f"stdin: expected a JSON object, got {type(doc).__name__}")
    status = doc.get("status")
    if status is None and "ociVersion" in doc and "id" not in doc:
        return Stage.PRECREATE
    if status in ("creating", "created"):
        return Stage.CREATE_RUNTIME
    if status == "stopped":
        return Stage.POSTSTOP
    raise SpecError(
        f"stdin: container status {status!r} is not one this hook handles; register it only for "
        "precreate, createRuntime and poststop"
    )


def annotations_of(doc: Mapping[str, Any], where: str) -> dict[str, str]:
    raw = doc.get("annotations")
    if raw is None:
        return {}
    if not isinstance(raw, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in raw.items()
    ):
        raise SpecError(f"{where}: field 'annotations' must map strings to strings")
    return dict(raw)


def podman_container_id(config: Mapping[str, Any]) -> str | None:
    """The container id podman put into the cgroup path of a runtime config, None when there is none."""
    linux = config.get("linux")
    path = linux.get("cgroupsPath") if isinstance(linux, dict) else None
    if not isinstance(path, str):
        return None
    m = _PODMAN_CGROUP_RE.search(path)
    return m.group(1) if m else None


def network_namespace_path(config: Mapping[str, Any]) -> str | None:
    """The path of the network namespace a config joins, None when the runtime will create a new one."""
    linux = config.get("linux")
    spaces = linux.get("namespaces") if isinstance(linux, dict) else None
    for ns in spaces if isinstance(spaces, list) else ():
        if isinstance(ns, dict) and ns.get("type") == "network" and ns.get("path"):
            return str(ns["path"])
    return None


def makes_network_namespace(config: Mapping[str, Any]) -> bool:
    """True when the runtime would make the container a new network namespace (an entry without a path)."""
    linux = config.get("linux")
    spaces = linux.get("namespaces") if isinstance(linux, dict) else None
    return any(
        isinstance(ns, dict) and ns.get("type") == "network" and not ns.get("path")
        for ns in (spaces if isinstance(spaces, list) else ())
    )


def join_network_namespace(config: Mapping[str, Any], path: str) -> JsonObject:
    """A copy of `config` whose container joins the network namespace at `path` instead of a new one."""
    out: JsonObject = dict(config)
    linux = dict(_obj(out, "linux"))
    spaces = [
        {**ns, "path": path} if isinstance(ns, dict) and ns.get("type") == "network" else ns
        for ns in _list(linux, "namespaces", "linux")
    ]
    linux["namespaces"] = spaces
    out["linux"] = linux
    return out


def apply_adjustment(config: Mapping[str, Any], adj: ContainerAdjustment) -> JsonObject:
    """A copy of `config` with the adjustment's env, mounts, devices (and their cgroup allow rules) and
    annotations. Applying the same adjustment twice gives the same config: entries we own are replaced
    by key (env name, mount destination, device path, annotation key), never duplicated."""
    out: JsonObject = dict(config)
    process = dict(_obj(out, "process"))
    env = [e for e in _list(process, "env", "process") if e.split("=", 1)[0] not in adj.env]
    process["env"] = [*env, *(f"{k}={v}" for k, v in sorted(adj.env.items()))]
    out["process"] = process

    mine = {m.destination for m in adj.mounts}
    mounts = [
        m for m in _list(out, "mounts", "") if not (isinstance(m, dict) and m.get("destination") in mine)
    ]
    out["mounts"] = [*mounts, *(_mount_json(m) for m in adj.mounts)]

    if adj.devices:
        linux = dict(_obj(out, "linux"))
        paths = {d.path for d in adj.devices}
        devices = [
            d
            for d in _list(linux, "devices", "linux")
            if not (isinstance(d, dict) and d.get("path") in paths)
        ]
        linux["devices"] = [*devices, *(device_node_json(d) for d in adj.devices)]
        resources = dict(_obj(linux, "resources"))
        rules = _list(resources, "devices", "linux.resources")
        # Without an allow rule the device cgroup refuses to open the node (EPERM), even though it exists.
        rules += [r for d in adj.devices if (r := _allow_rule(d)) not in rules]
        resources["devices"] = rules
        linux["resources"] = resources
        out["linux"] = linux

    if adj.annotations:
        out["annotations"] = {**annotations_of(out, "runtime config"), **adj.annotations}
    return out


@dataclass(frozen=True)
class HookCommand:
    """How the runtime should call us back: executable, arguments after the stage, time limit."""

    path: str
    args: tuple[str, ...] = ()
    timeout_s: int = 30


def ensure_hooks(
    config: Mapping[str, Any],
    cmd: HookCommand,
    stages: tuple[Stage, ...] = (Stage.CREATE_RUNTIME, Stage.POSTSTOP),
) -> JsonObject:
    """A copy of `config` whose hooks at `stages` include ours (added when missing)."""
    out: JsonObject = dict(config)
    hooks = dict(_obj(out, "hooks"))
    for stage in stages:
        entries = _list(hooks, stage.value, "hooks")
        if not any(isinstance(h, dict) and _is_ours(h, cmd, stage) for h in entries):
            entries.append(
                {
                    "path": cmd.path,
                    "args": [_ARGV0, *cmd.args, stage.value],
                    "timeout": cmd.timeout_s,
                }
            )
        hooks[stage.value] = entries
    out["hooks"] = hooks
    return out


_ARGV0 = "vfhotplug-hook"


def _is_ours(hook: Mapping[str, Any], cmd: HookCommand, stage: Stage) -> bool:
    args = hook.get("args")
    return hook.get("path") == cmd.path and isinstance(args, list) and stage.value in args


def _obj(parent: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    value = parent.get(key)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise SpecError(f"runtime config: field {key!r} must be an object, got {type(value).__name__}")
    return value


def _list(parent: Mapping[str, Any], key: str, where: str) -> list[Any]:
    value = parent.get(key)
    if value is None:
        return []
    if not isinstance(value, list):
        name = f"{where}.{key}" if where else key
        raise SpecError(f"runtime config: field {name!r} must be a list, got {type(value).__name__}")
    return list(value)


def _mount_json(m: Mount) -> JsonObject:
    return {"destination": m.destination, "type": m.type, "source": m.source, "options": list(m.options)}


def _allow_rule(d: Device) -> JsonObject:
    return {"allow": True, "type": d.type, "major": d.major, "minor": d.minor, "access": "rwm"}


def refuse_at_create(config: Mapping[str, Any], line: str) -> JsonObject:
    """A copy of `config` whose first createRuntime hook prints `line` to stderr and fails.

    podman does not show a failing precreate hook's stderr, but runc quotes a failing createRuntime hook's
    stderr in its error, which podman shows: so the user reads our line, and no container starts.
    """
    out: JsonObject = dict(config)
    hooks = dict(_obj(out, "hooks"))
    refuse = {"path": "/bin/sh", "args": ["sh", "-c", 'printf "%s\\n" "$1" >&2; exit 1', "sh", line]}
    hooks[Stage.CREATE_RUNTIME.value] = [refuse, *_list(hooks, Stage.CREATE_RUNTIME.value, "hooks")]
    out["hooks"] = hooks
    return out
