"""Fixtures of the lab's VM side. Each test module boots its own guest (20-40 s on 2 busy cores): the plain guest for
the adapter-level tests, the full stack (host service + vfhotplug-nri) for the pod tests, so the service's
reconcile never meets devices the adapter tests plug by hand."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator

import pytest

from lab.vm_side.lab import Lab
from lab.vm_side.stack import LabStack
from tests.conftest import REPO


def _setup() -> None:
    if os.geteuid() != 0:
        pytest.skip("the lab needs root (libvirtd, mount namespaces, QEMU)")
    # Idempotent and quick once done; makes a bare `pytest -m lab` work without `make testbed-lab`.
    done = subprocess.run(
        ["bash", str(REPO / "lab/vm_side/setup.sh")], capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        pytest.fail(f"lab/vm_side/setup.sh failed:\n{done.stdout}{done.stderr}")


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    _setup()
    with Lab() as running:
        yield running


@pytest.fixture(scope="module")
def stack() -> Iterator[LabStack]:
    _setup()
    with LabStack() as running:
        yield running
