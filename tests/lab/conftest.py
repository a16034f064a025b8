"""Fixtures of the lab's VM side. Each test module boots its own guest (20-40 s on 2 busy cores): the plain guest for
the adapter-level tests, the full stack (host service + vfhotplug-nri) for the pod tests, so the service's
reconcile never meets devices the adapter tests plug by hand."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from lab.vm_side.lab import Lab
from lab.vm_side.stack import LabStack
from tests.lab.level_setup import set_up_level


def _setup() -> None:
    set_up_level("lab/vm_side/setup.sh", "libvirtd, mount namespaces, QEMU")


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
