"""Fixtures for the tier C tests: the hand-started libvirtd and one q35 TCG guest per test module."""

from __future__ import annotations

import os
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import libvirt
import pytest

from testbed.libvirt_vm import IMAGE_DIR, URI, TestVm


@pytest.fixture(scope="session")
def libvirtd() -> str:
    """The URI of the testbed's libvirtd; skips when not root, fails when the testbed is missing."""
    if os.geteuid() != 0:
        pytest.skip("needs root: the tier C testbed runs libvirtd and QEMU as root")
    if not (IMAGE_DIR / "vmlinux").exists():
        pytest.fail(f"no guest image in {IMAGE_DIR}: run `make testbed-libvirt` first")
    try:
        libvirt.open(URI).close()
    except libvirt.libvirtError as e:
        pytest.fail(f"libvirtd at {URI} does not answer ({e}): run `make testbed-libvirt` first")
    return URI


@pytest.fixture(scope="module")
def vm(libvirtd: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestVm]:
    """A booted guest with 4 free pcie-root-ports, unique per module so parallel runs do not collide."""
    guest = TestVm(
        f"vfhp-test-{uuid.uuid4().hex[:8]}", run_dir=tmp_path_factory.mktemp("libvirt"), uri=libvirtd
    )
    guest.start()
    yield guest
    guest.destroy()


REPO = Path(__file__).resolve().parents[2]


def owned_libvirtd_pid() -> int | None:
    """The pid of the running libvirtd if testbed/libvirt/start.sh started it, else None."""
    try:
        owned = (REPO / "build" / "libvirt" / "libvirtd.owned").read_text().strip()
        running = Path("/run/libvirtd.pid").read_text().strip()
    except FileNotFoundError:
        return None
    return int(owned) if owned == running else None


def restart_libvirtd() -> None:
    """Starts libvirtd again through the testbed's own script (a test stopped it)."""
    subprocess.run(["bash", str(REPO / "testbed" / "libvirt" / "start.sh")], check=True)
