"""The pure OCI half of the hooks: state parsing, stage detection, config edits."""

from __future__ import annotations

import copy
import json
import subprocess
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from oci_hooks.spec import (
    HookCommand,
    SpecError,
    Stage,
    apply_adjustment,
    ensure_hooks,
    join_network_namespace,
    makes_network_namespace,
    network_namespace_path,
    parse_state,
    podman_container_id,
    refuse_at_create,
    stage_of,
)
from vm_side.runtime_model import ContainerAdjustment, Device, Mount

CID = "a" * 64
BASE: dict[str, Any] = {
    "ociVersion": "1.0.2-dev",
    "process": {"args": ["sh"], "env": ["PATH=/bin", "VFHOTPLUG_COUNT=9"]},
    "root": {"path": "rootfs"},
    "mounts": [{"destination": "/proc", "type": "proc", "source": "proc"}],
    "linux": {
        "namespaces": [{"type": "pid"}, {"type": "network"}],
        "resources": {"devices": [{"allow": False, "access": "rwm"}]},
    },
    "annotations": {"vfhotplug.io/vfs": "1"},
}
ADJ = ContainerAdjustment(
    annotations={"vfhotplug.io/status": "[]"},
    env={"VFHOTPLUG_COUNT": "1", "PCIDEVICE_VFHOTPLUG_IO_DEFAULT": "0000:10:00.0"},
    mounts=(Mount("/var/run/dpdk", "/run/vfhotplug/pods/x/dpdk", options=("rbind", "rw")),),
    devices=(Device("/dev/vfio/vfio", 10, 196, file_mode=0o666), Device("/dev/vfio/16", 511, 16)),
)


def test_state_fields():
    s = parse_state(
        {
            "ociVersion": "1.0.2",
            "id": "c1",
            "status": "creating",
            "pid": 42,
            "bundle": "/b",
            "annotations": {},
        }
    )
    assert (s.id, s.status, s.pid, s.bundle, dict(s.annotations)) == ("c1", "creating", 42, "/b", {})
    assert parse_state({"id": "c1", "status": "stopped", "bundle": "/b"}).pid is None


@pytest.mark.parametrize(
    ("doc", "field"),
    [
        ([], "JSON object"),
        ({"status": "creating"}, "'id'"),
        ({"id": "c", "pid": True}, "'pid'"),
        ({"id": "c", "pid": -3}, "'pid'"),
        ({"id": "c", "annotations": {"k": 1}}, "'annotations'"),
    ],
)
def test_state_errors_name_the_field(doc, field):
    with pytest.raises(SpecError, match=field):
        parse_state(doc)


def test_stage_from_input():
    assert stage_of(BASE) is Stage.PRECREATE
    assert stage_of({"id": "c", "status": "creating", "ociVersion": "1"}) is Stage.CREATE_RUNTIME
    assert stage_of({"id": "c", "status": "created"}) is Stage.CREATE_RUNTIME  # crun
    assert stage_of({"id": "c", "status": "stopped"}) is Stage.POSTSTOP
    with pytest.raises(SpecError, match="'running'"):
        stage_of({"id": "c", "status": "running"})


def test_adjustment_written_into_config():
    before = copy.deepcopy(BASE)
    out = apply_adjustment(BASE, ADJ)
    assert BASE == before  # the input is not modified
    env = out["process"]["env"]
    assert "PATH=/bin" in env and "VFHOTPLUG_COUNT=1" in env and "VFHOTPLUG_COUNT=9" not in env
    assert "PCIDEVICE_VFHOTPLUG_IO_DEFAULT=0000:10:00.0" in env
    assert out["mounts"][0]["destination"] == "/proc"
    assert out["mounts"][1] == {
        "destination": "/var/run/dpdk",
        "type": "bind",
        "source": "/run/vfhotplug/pods/x/dpdk",
        "options": ["rbind", "rw"],
    }
    assert out["linux"]["devices"] == [
        {"path": "/dev/vfio/vfio", "type": "c", "major": 10, "minor": 196, "fileMode": 0o666},
        {"path": "/dev/vfio/16", "type": "c", "major": 511, "minor": 16},
    ]
    rules = out["linux"]["resources"]["devices"]
    assert rules[0] == {"allow": False, "access": "rwm"}  # the default deny stays first
    assert {"allow": True, "type": "c", "major": 511, "minor": 16, "access": "rwm"} in rules
    assert out["linux"]["namespaces"] == BASE["linux"]["namespaces"]
    assert out["annotations"] == {"vfhotplug.io/vfs": "1", "vfhotplug.io/status": "[]"}


def test_adjustment_twice_is_once():
    once = apply_adjustment(BASE, ADJ)
    assert apply_adjustment(once, ADJ) == once


@given(
    st.dictionaries(st.from_regex(r"[A-Z_]{1,8}", fullmatch=True), st.text(max_size=8), max_size=5),
    st.dictionaries(st.from_regex(r"[A-Z_]{1,8}", fullmatch=True), st.text(max_size=8), max_size=5),
)
def test_env_keys_stay_unique(existing, ours):
    config = {"process": {"env": [f"{k}={v}" for k, v in existing.items()]}}
    env = apply_adjustment(config, ContainerAdjustment(env=ours))["process"]["env"]
    names = [e.split("=", 1)[0] for e in env]
    assert sorted(names) == sorted(set(existing) | set(ours))
    assert {e.split("=", 1)[0]: e.split("=", 1)[1] for e in env} == {**existing, **ours}


def test_malformed_config_names_the_field():
    with pytest.raises(SpecError, match=r"'linux\.devices'"):
        apply_adjustment({"linux": {"devices": {}}}, ADJ)


def test_hooks_added_once_beside_others():
    other = {"path": "/usr/bin/other", "args": ["other"]}
    config = {"hooks": {"poststop": [other]}}
    cmd = HookCommand("/opt/vfhotplug-hook", ("--config", "/etc/v.toml"), timeout_s=12)
    out = ensure_hooks(config, cmd)
    assert out["hooks"]["createRuntime"] == [
        {
            "path": "/opt/vfhotplug-hook",
            "args": ["vfhotplug-hook", "--config", "/etc/v.toml", "createRuntime"],
            "timeout": 12,
        }
    ]
    assert out["hooks"]["poststop"][0] == other and len(out["hooks"]["poststop"]) == 2
    assert ensure_hooks(out, cmd) == out
    assert json.loads(json.dumps(out)) == out


def test_podman_container_id_from_cgroup_path():
    assert podman_container_id({"linux": {"cgroupsPath": f"/libpod_parent/libpod-{CID}"}}) == CID
    assert podman_container_id({"linux": {"cgroupsPath": f"machine.slice:libpod:{CID}"}}) == CID
    assert podman_container_id({"linux": {"cgroupsPath": "/default/c1"}}) is None
    assert podman_container_id({}) is None


def test_network_namespace_path():
    assert network_namespace_path(BASE) is None
    joined = {"linux": {"namespaces": [{"type": "network", "path": "/run/netns/cni-1"}]}}
    assert network_namespace_path(joined) == "/run/netns/cni-1"


def test_joining_a_network_namespace_replaces_only_the_new_one():
    config = {"linux": {"namespaces": [{"type": "pid"}, {"type": "network"}], "sysctl": {"a": "1"}}}
    before = copy.deepcopy(config)
    assert makes_network_namespace(config)
    out = join_network_namespace(config, "/var/lib/vfhotplug/netns/c1")
    assert out["linux"]["namespaces"] == [
        {"type": "pid"},
        {"type": "network", "path": "/var/lib/vfhotplug/netns/c1"},
    ]
    assert out["linux"]["sysctl"] == {"a": "1"} and config == before  # a copy; other fields untouched
    assert network_namespace_path(out) == "/var/lib/vfhotplug/netns/c1" and not makes_network_namespace(out)
    assert not makes_network_namespace({"linux": {"namespaces": [{"type": "pid"}]}})  # the host's netns


def test_refusal_runs_first_at_create_runtime():
    ours = {"path": "/usr/local/bin/vfhotplug-hook", "args": ["vfhotplug-hook", "auto"]}
    out = refuse_at_create({**BASE, "hooks": {"createRuntime": [ours]}}, "vfhotplug: no")
    first, second = out["hooks"]["createRuntime"]
    assert second == ours and first["path"] == "/bin/sh" and first["args"][-1] == "vfhotplug: no"
    res = subprocess.run([first["path"], *first["args"][1:]], capture_output=True, text=True)
    assert (res.returncode, res.stderr) == (1, "vfhotplug: no\n")
