"""One lock per pod, so the runtime's calls, the release worker and reconcile never interleave on a pod."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager


class PodLocks:
    def __init__(self) -> None:
        self._guard = threading.Lock()
        self._pods: dict[str, threading.Lock] = {}
        self._users: dict[str, int] = {}  # holders and waiters per pod lock
        self._busy: set[str] = set()

    @contextmanager
    def hold(self, pod_uid: str) -> Iterator[None]:
        """Serialize work on one pod; while held the pod counts as `busy`."""
        with self._guard:
            lock = self._pods.setdefault(pod_uid, threading.Lock())
            self._users[pod_uid] = self._users.get(pod_uid, 0) + 1
        try:
            with lock:
                with self._guard:
                    self._busy.add(pod_uid)
                try:
                    yield
                finally:
                    with self._guard:
                        self._busy.discard(pod_uid)
        finally:
            with self._guard:
                self._users[pod_uid] -= 1
                if not self._users[pod_uid]:  # last user: drop the lock, the map stays bounded
                    del self._users[pod_uid], self._pods[pod_uid]

    def busy(self) -> set[str]:
        """Pods mid-flight right now, so a host Sync never frees their leases."""
        with self._guard:
            return set(self._busy)
