"""Where one hook call's time goes: named spans, logged as one line per stage (tests/bench_oci.py reads it)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field


@dataclass
class Spans:
    """Non-overlapping named spans since `started` (a time.perf_counter() value); the rest is `other`."""

    started: float = field(default_factory=time.perf_counter)
    took: dict[str, float] = field(default_factory=dict)

    @contextmanager
    def span(self, name: str) -> Iterator[None]:
        began = time.perf_counter()
        try:
            yield
        finally:
            self.took[name] = self.took.get(name, 0.0) + time.perf_counter() - began

    def line(self) -> str:
        """E.g. `212 ms in-process: load 150 ms, host attach 30 ms, other 32 ms`."""
        total = time.perf_counter() - self.started
        parts = [f"{name} {s * 1e3:.0f} ms" for name, s in self.took.items()]
        parts.append(f"other {(total - sum(self.took.values())) * 1e3:.0f} ms")
        return f"{total * 1e3:.0f} ms in-process: {', '.join(parts)}"
