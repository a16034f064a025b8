"""A token bucket per VM identity: one VM over its request rate is refused, the others are not slowed."""

from __future__ import annotations

import threading
from dataclasses import dataclass


@dataclass
class Bucket:
    tokens: float
    at: float  # monotonic time of the last refill


def take(bucket: Bucket, now: float, rate_per_s: float, burst: int) -> float:
    """Takes one token if there is one and returns 0.0; else the seconds until one is there."""
    bucket.tokens = min(float(burst), bucket.tokens + (now - bucket.at) * rate_per_s)
    bucket.at = now
    if bucket.tokens >= 1.0:
        bucket.tokens -= 1.0
        return 0.0
    return (1.0 - bucket.tokens) / rate_per_s


class RateLimiter:
    """The buckets of every VM, each starting full; safe to call from the server's worker threads."""

    def __init__(self, rate_per_s: float, burst: int) -> None:
        self.rate_per_s, self.burst = rate_per_s, burst
        self._buckets: dict[str, Bucket] = {}
        self._lock = threading.Lock()

    def wait_s(self, identity: str, now: float) -> float:
        """0.0 when `identity` may make a call now (the call is counted), else how long until it may."""
        with self._lock:
            bucket = self._buckets.setdefault(identity, Bucket(float(self.burst), now))
            return take(bucket, now, self.rate_per_s, self.burst)
