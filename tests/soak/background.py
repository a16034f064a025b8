"""A daemon thread that runs a loop next to the churn until `stop()`."""

from __future__ import annotations

import threading


class Background:
    """`_run` loops until `_stop` is set (wait on it to sleep, so `stop()` cuts sleeps short)."""

    def __init__(self, name: str, join_s: float) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._join_s = join_s

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(self._join_s)

    def _run(self) -> None:
        raise NotImplementedError
