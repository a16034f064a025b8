"""Fixtures for the data-path tests: short temp folders (unix socket paths are limited to 107 bytes),
the VPP API stand-in, and the ``Vpp`` adapter pointed at it."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.vpp_standin.server import API_DIR, MEMCLNT_DIR, VppStandin
from vm_side.vpp import Vpp
from vm_side.vpp_pod import VppPods


@pytest.fixture
def make_standin(short_tmp: Path) -> Iterator[Callable[..., VppStandin]]:
    started: list[VppStandin] = []

    def make(offer: tuple[str, ...] = ("dev", "avf")) -> VppStandin:
        s = VppStandin(short_tmp / "api.sock", offer=offer).start()
        started.append(s)
        return s

    yield make
    for s in started:
        s.stop()


def make_vpp(socket_path: Path, read_timeout: float = 5.0) -> Vpp:
    return Vpp(
        socket_path, api_dirs=(API_DIR, MEMCLNT_DIR), client_name="vfh-test", read_timeout=read_timeout
    )


@pytest.fixture
def pods(short_tmp: Path) -> Iterator[VppPods]:
    vpp = make_vpp(short_tmp / "api.sock")
    yield VppPods(vpp, short_tmp / "memif")
    vpp.close()
