"""Shared fixtures. Each real containerd release of the test bed is started once per test run, and every
test that uses the ``containerd`` fixture runs on each of them."""

from __future__ import annotations

import os
import subprocess
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest

from testbed.containerd import RUNTIMES, Containerd, Runtime

REPO = Path(__file__).resolve().parents[1]
NRI_TABLE = "io.containerd.nri.v1.nri"


@pytest.fixture(scope="session", params=RUNTIMES, ids=[r.name for r in RUNTIMES])
def containerd(request: pytest.FixtureRequest) -> Iterator[Containerd]:
    """The shared instance ("main") of one containerd release; tests remove the pods they create."""
    runtime: Runtime = request.param
    if os.geteuid() != 0:
        pytest.skip("the containerd test bed needs root (overlayfs mounts, cgroups, network namespaces)")
    # Idempotent and fast once done; makes a bare `pytest` work without `make testbed-containerd`.
    setup = subprocess.run(
        ["bash", str(REPO / "testbed/containerd/setup.sh"), runtime.version],
        capture_output=True,
        text=True,
        check=False,
    )
    if setup.returncode != 0:
        pytest.fail(f"testbed/containerd/setup.sh {runtime.version} failed:\n{setup.stdout}{setup.stderr}")
    # The request timeout of the shipped snippet: tests run what users deploy (and a loaded 2-core CI
    # machine must not turn a cold two-VF attach into a dropped plugin).
    shipped = tomllib.loads(runtime.nri_snippet.read_text())
    timeout = shipped["plugins"][NRI_TABLE]["plugin_request_timeout"]
    instance = Containerd(runtime, "main", nri_request_timeout=timeout)
    instance.start()
    instance.remove_all_pods()  # left over by an interrupted earlier run
    try:
        yield instance
    finally:
        instance.cleanup()
