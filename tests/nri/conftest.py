"""Fixtures of the NRI stub tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.nri.event_plugins import Wires


@pytest.fixture
def wires() -> Iterator[Wires]:
    w = Wires()
    yield w
    w.close()
