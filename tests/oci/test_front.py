"""The hooks' sh front (oci_hooks/vfhotplug-oci-hook): a container that asks for no VFs never starts Python,
one that does reaches the Python hook with its stdin intact, through the shell itself and the real runc.

The proof of "never starts Python" is a stand-in for the Python hook that logs each call and fails loudly:
any call would show in its log and fail the stage (runc then fails the container)."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.oci import bed as oci_bed

STATE = {"ociVersion": "1.0.2", "id": "c1", "status": "creating", "pid": 7, "bundle": "/b", "annotations": {}}
# A precreate config with what a shell could mangle: backslashes, $, backquotes, %, trailing newlines.
CONFIG_TEXT = '{"ociVersion": "1.0.2", "process": {"args": ["sh", "-c", "echo \\\\n $HOME `id` %s"]}}\n\n'


def loud_python(folder: Path) -> tuple[Path, Path]:
    """A stand-in for the Python hook: logs its arguments and stdin, then fails."""
    log = folder / "python-calls"
    exe = folder / "loud-python"
    exe.write_text(f'#!/bin/sh\necho "args: $*" >> {log}\ncat >> {log}\necho "<end>" >> {log}\nexit 3\n')
    exe.chmod(0o755)
    return exe, log


def front(*args: str, stdin: str, python: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(oci_bed.FRONT), *args],
        input=stdin,
        capture_output=True,
        text=True,
        env={"VFHOTPLUG_HOOK": str(python)},  # runtimes run hooks with only the env they name
        timeout=10,
    )


def test_no_annotation_answers_in_the_shell(tmp_path: Path):
    python, log = loud_python(tmp_path)
    other = {**STATE, "annotations": {"io.example/vfs": "2", "note": "vfhotplug"}}
    for state in (STATE, other, {**STATE, "status": "stopped"}):
        for stage in ("createRuntime", "poststop"):
            res = front("--config", "/x.toml", stage, stdin=json.dumps(state), python=python)
            assert (res.returncode, res.stdout, res.stderr) == (0, "", "")
        res = front("auto", stdin=json.dumps(state), python=python)  # a state stage: stdout is ignored
        assert res.returncode == 0
    for stage in ("precreate", "auto"):
        res = front(stage, stdin=CONFIG_TEXT, python=python)
        assert (res.returncode, res.stdout, res.stderr) == (0, CONFIG_TEXT, "")  # byte for byte
    assert not log.exists()


def test_annotation_execs_python_with_stdin_intact(tmp_path: Path):
    python, log = loud_python(tmp_path)
    state = json.dumps({**STATE, "annotations": {"vfhotplug.io/vfs": "1"}}) + "\n"
    res = front("--config", "/x.toml", "createRuntime", stdin=state, python=python)
    assert res.returncode == 3  # the Python hook's status, not the shell's
    config = CONFIG_TEXT.replace('"process"', '"annotations": {"vfhotplug.io\\/vfs": "2"}, "process"')
    res = front("precreate", stdin=config, python=python)
    assert (res.returncode, res.stdout) == (3, "")  # nothing of the input leaks to the runtime
    calls = log.read_text()
    assert calls == f"args: --config /x.toml createRuntime\n{state}<end>\nargs: precreate\n{config}<end>\n"


def test_other_commands_go_straight_to_python(tmp_path: Path):
    python, log = loud_python(tmp_path)
    res = front("release", "c1", stdin="left unread by the front", python=python)
    assert res.returncode == 3
    assert log.read_text() == "args: release c1\nleft unread by the front<end>\n"


@pytest.fixture
def bed() -> Iterator[oci_bed.Bed]:
    if why := oci_bed.missing():
        pytest.skip(why)
    with oci_bed.bed() as b:
        yield b


def test_runc_container_without_annotation_never_starts_python(bed):
    python, log = loud_python(bed.folder)
    bundle = bed.bundle("n1", None)
    bed.add_hooks(bundle, env=[f"VFHOTPLUG_HOOK={python}"])  # hooks as configured for every container
    bed.runc("run", "-d", "--bundle", str(bundle), "n1")
    assert json.loads(bed.runc("state", "n1").stdout)["status"] == "running"
    bed.runc("delete", "-f", "n1")  # poststop
    assert not log.exists()

    # The same hooks on a container that asks for VFs do reach Python (which here refuses it).
    bundle = bed.bundle("v1", "1")
    bed.add_hooks(bundle, env=[f"VFHOTPLUG_HOOK={python}"])
    res = bed.runc("run", "-d", "--bundle", str(bundle), "v1", check=False)
    assert res.returncode != 0
    assert log.read_text().startswith("args: ") and "createRuntime" in log.read_text().splitlines()[0]


def test_runc_container_with_vfs_through_the_front(bed):
    bundle = bed.bundle("f1", "1")
    bed.hook_cmd("prepare", "--id", "f1", "--hook-path", str(bed.front), str(bundle))
    hooks = json.loads((bundle / "config.json").read_text())["hooks"]
    assert set(hooks) == {"poststop"} and hooks["poststop"][0]["path"] == str(bed.front)
    bed.runc("run", "-d", "--bundle", str(bundle), "f1")
    (lease,) = bed.host.leases_of("f1")
    links = oci_bed.parse_ip_link(bed.in_container("f1", "ip", "-o", "link"))
    assert links["net1"] == lease.mac  # moved at prepare, into the netns the container joined
    bed.runc("delete", "-f", "f1")  # poststop runs Python through the front
    assert bed.host.leases_of("f1") == [] and bed.guest.records() == []
