"""What the lab and its stack share: start-up in named, timed phases reported as they begin, and the
context manager protocol (up on enter, down on exit, down too after a partial up)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from types import TracebackType
from typing import Self, TypeVar

log = logging.getLogger(__name__)
T = TypeVar("T")
Progress = Callable[[str], None]


def no_progress(_: str) -> None:
    pass


class Phased:
    """A base for objects that come up in phases; `phases` holds the seconds each one took."""

    def __init__(self, progress: Progress) -> None:
        self._progress = progress
        self.phases: dict[str, float] = {}

    def _phase(self, name: str, what: str, fn: Callable[[], T]) -> T:
        self._progress(what)
        t0 = time.monotonic()
        result = fn()
        self.phases[name] = time.monotonic() - t0
        log.info("lab: %s took %.2f s", name, self.phases[name])
        return result

    def up(self) -> None:
        raise NotImplementedError

    def down(self) -> None:
        """Must be safe after a partial up()."""
        raise NotImplementedError

    def __enter__(self) -> Self:
        try:
            self.up()
        except BaseException:
            self.down()
            raise
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.down()
