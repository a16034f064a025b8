"""Shared fixtures. The real containerd test bed is started once per test run."""

from __future__ import annotations

import os
import subprocess
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest

from testbed.containerd import Containerd, default_prefix

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def containerd() -> Iterator[Containerd]:
    """The shared containerd 1.7 instance ("main"); tests remove the pods they create."""
    if os.geteuid() != 0:
        pytest.skip("the containerd test bed needs root (overlayfs mounts, cgroups, network namespaces)")
    # Idempotent and fast once done; makes a bare `pytest` work without `make testbed-containerd`.
    setup = subprocess.run(
        ["bash", str(REPO / "testbed/containerd/setup.sh")], capture_output=True, text=True, check=False
    )
    if setup.returncode != 0:
        pytest.fail(f"testbed/containerd/setup.sh failed:\n{setup.stdout}{setup.stderr}")
    # The request timeout of the shipped config/containerd/nri.toml: tests run what users deploy (and
    # a loaded 2-core CI machine must not turn a cold two-VF attach into a dropped plugin).
    shipped = tomllib.loads((REPO / "config/containerd/nri.toml").read_text())
    timeout = shipped["plugins"]["io.containerd.nri.v1.nri"]["plugin_request_timeout"]
    instance = Containerd(default_prefix(), "main", nri_request_timeout=timeout)
    instance.start()
    instance.remove_all_pods()  # left over by an interrupted earlier run
    try:
        yield instance
    finally:
        instance.cleanup()
