"""The tier C lab guest, booted once per test module (about 20-40 s on 2 busy cores)."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator

import pytest

from lab.lab import Lab
from tests.conftest import REPO


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    if os.geteuid() != 0:
        pytest.skip("the lab needs root (libvirtd, mount namespaces, QEMU)")
    setup = subprocess.run(["bash", str(REPO / "lab/setup.sh")], capture_output=True, text=True, check=False)
    if setup.returncode != 0:
        pytest.fail(f"lab/setup.sh failed:\n{setup.stdout}{setup.stderr}")
    with Lab() as running:
        yield running
