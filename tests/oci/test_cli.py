"""The `vfhotplug-hook` process without a host: the no-VF fast path, config lookup, exit codes, the one line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.oci.bed import REPO

STATE = {"ociVersion": "1.0.2", "id": "c1", "status": "creating", "pid": 1, "bundle": "/b", "annotations": {}}
CONFIG = {"ociVersion": "1.0.2", "process": {"args": ["sh"]}, "root": {"path": "rootfs"}, "annotations": {}}


def hook(*args: str, stdin: str = "", env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "oci_hooks", *args],
        input=stdin,
        capture_output=True,
        text=True,
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO), **(env or {})},
        timeout=60,
    )


def test_no_annotation_never_reads_the_config():
    env = {"VFHOTPLUG_CONFIG": "/nonexistent/nri.toml"}
    for stage in ("createRuntime", "poststop", "auto"):
        res = hook(stage, stdin=json.dumps(STATE), env=env)
        assert (res.returncode, res.stdout, res.stderr) == (0, "", "")
    text = json.dumps(CONFIG, indent=3)  # given back byte for byte
    for stage in ("precreate", "auto"):
        res = hook(stage, stdin=text, env=env)
        assert (res.returncode, res.stdout, res.stderr) == (0, text, "")


def test_missing_config_is_a_usage_error_naming_the_file(tmp_path: Path):
    state = json.dumps({**STATE, "annotations": {"vfhotplug.io/vfs": "1"}})
    res = hook("createRuntime", stdin=state, env={"VFHOTPLUG_CONFIG": str(tmp_path / "env.toml")})
    assert res.returncode == 2
    (line,) = res.stderr.splitlines()
    assert line.startswith("vfhotplug: cannot read config ") and "env.toml" in line and "--config" in line
    res = hook("--config", str(tmp_path / "flag.toml"), "createRuntime", stdin=state)
    assert res.returncode == 2 and "flag.toml" in res.stderr  # the flag wins over the environment


def test_garbage_on_stdin_is_one_line():
    res = hook("poststop", stdin="not json")
    assert res.returncode == 2
    (line,) = res.stderr.splitlines()
    assert line.startswith("vfhotplug: stdin is not JSON")
    res = hook(
        "auto", stdin=json.dumps({"id": "c1", "status": "running", "annotations": {"vfhotplug.io/vfs": "1"}})
    )
    assert res.returncode == 1 and "'running' is not one this hook handles" in res.stderr


def test_failed_precreate_refuses_at_create_runtime(tmp_path: Path):
    config = {**CONFIG, "annotations": {"vfhotplug.io/vfs": "1"}}
    res = hook("--config", str(tmp_path / "missing.toml"), "precreate", stdin=json.dumps(config))
    assert res.returncode == 0  # podman would hide a failure here; runc shows the refusal hook's line
    out = json.loads(res.stdout)
    refuse = out["hooks"]["createRuntime"][0]
    assert "cannot read config" in refuse["args"][-1] and out["process"] == config["process"]
