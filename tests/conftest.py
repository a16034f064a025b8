"""Shared fixtures. Each real containerd release of the test bed is started once per test run, and every
test that uses the ``containerd`` fixture runs on each of them."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from testbed.containerd import RUNTIMES, Containerd, ContainerdError, Runtime
from testbed.containerd.instance import start_instance

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def short_tmp() -> Iterator[Path]:
    """A temporary folder with a short path: a unix socket path under it must fit in 108 bytes."""
    path = Path(tempfile.mkdtemp(prefix="vfh-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="session", params=RUNTIMES, ids=[r.name for r in RUNTIMES])
def containerd(request: pytest.FixtureRequest) -> Iterator[Containerd]:
    """The shared instance ("main") of one containerd release; tests remove the pods they create."""
    runtime: Runtime = request.param
    if os.geteuid() != 0:
        pytest.skip("the containerd test bed needs root (overlayfs mounts, cgroups, network namespaces)")
    try:
        instance = start_instance(runtime, "main")
    except ContainerdError as e:
        pytest.fail(str(e))
    try:
        yield instance
    finally:
        instance.cleanup()
