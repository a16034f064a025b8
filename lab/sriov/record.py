"""What the check in L1 hands back: observations, timings and step errors, written as JSON after every
step, so a crash keeps what came before."""

from __future__ import annotations

import json
import logging
import time
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


class Recorder:
    def __init__(self, path: Path) -> None:
        self._path = path
        self.data: dict[str, Any] = {"observations": {}, "timings": {}, "steps": {}}
        self._t0 = time.monotonic()

    def put(self, key: str, value: object) -> None:
        self.data["observations"][key] = value

    def get(self, key: str) -> Any:
        return self.data["observations"][key]

    def time(self, key: str, seconds: float) -> None:
        self.data["timings"][key] = round(seconds, 3)

    def ok(self, step: str) -> bool:
        return bool(self.data["steps"].get(step, {}).get("ok"))

    @contextmanager
    def step(self, name: str) -> Iterator[None]:
        """Records the step's outcome; a failing step is recorded with its traceback, not raised."""
        t0 = time.monotonic()
        log.info("step %s", name)
        try:
            yield
        except Exception:
            log.exception("step %s failed", name)
            self.data["steps"][name] = {"ok": False, "error": traceback.format_exc()}
        else:
            self.data["steps"][name] = {"ok": True}
        finally:
            self.data["steps"][name]["seconds"] = round(time.monotonic() - t0, 3)
            self.write()

    def write(self) -> None:
        self.data["total_s"] = round(time.monotonic() - self._t0, 3)
        self._path.write_text(json.dumps(self.data, indent=1, sort_keys=True))
