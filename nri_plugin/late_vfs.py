"""VFs for pods that containerd started without us: while the plugin was down or not registered, and
when it died in the middle of their RunPodSandbox (NRI before containerd 2.2 has no required plugins).

Synchronize names them; a background thread prepares each, retrying with backoff while the host is away
or the pool and quota have no room, until the pod has its VFs, goes away, or its demand is bad.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Iterable

from vm_side.lifecycle import PodError, PodLifecycle
from vm_side.runtime_model import PodInfo

log = logging.getLogger(__name__)
_PERMANENT_STEPS = frozenset({"bad demand"})  # asking again cannot change the answer


class LateVfs:
    def __init__(
        self, lifecycle: PodLifecycle, first_backoff_s: float = 0.5, max_backoff_s: float = 30.0
    ) -> None:
        self.lifecycle = lifecycle
        self._first = first_backoff_s
        self._max = max_backoff_s
        self._pending: dict[str, PodInfo] = {}
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None

    def replace(self, pods: Iterable[PodInfo]) -> None:
        """The pods of the latest Synchronize that ask for VFs and have none (Synchronize is the truth)."""
        with self._cond:
            self._pending = {p.uid: p for p in pods}
            if self._pending and (self._thread is None or not self._thread.is_alive()):
                self._thread = threading.Thread(target=self._run, name="nri-late-vfs", daemon=True)
                self._thread.start()
            self._cond.notify_all()

    def forget(self, pod_uid: str) -> None:
        """The pod stopped or went away: stop trying."""
        with self._cond:
            self._pending.pop(pod_uid, None)

    def pending(self) -> list[str]:
        with self._cond:
            return sorted(self._pending)

    def _run(self) -> None:
        backoff = self._first
        while True:
            with self._cond:
                pods = list(self._pending.values())
            if not pods:
                return
            for pod in pods:
                self._try(pod)
            with self._cond:
                if not self._pending:
                    return
                self._cond.wait(backoff)
            backoff = min(backoff * 2, self._max)

    def _try(self, pod: PodInfo) -> None:
        with self._cond:
            if pod.uid not in self._pending:
                return
        if pod.netns and not os.path.exists(pod.netns):
            # A sandbox whose netns is gone is not running, whatever the runtime lists: containerd 2.1
            # brings back sandboxes of failed starts as ready after a restart (containerd#13355).
            log.warning("pod %s: its netns %s is gone; not giving it VFs", pod.ref, pod.netns)
            self.forget(pod.uid)
            return
        deadline = time.monotonic() + 2 * self.lifecycle.config.host_timeout_s
        try:
            self.lifecycle.prepare(
                pod.uid, f"{pod.namespace}/{pod.name}", pod.netns or "", pod.annotations, deadline
            )
        except PodError as e:
            if e.step in _PERMANENT_STEPS:
                log.error("pod %s runs without its VFs: %s", pod.ref, e)
                self.forget(pod.uid)
            else:
                log.warning("pod %s still without its VFs (%s); retrying", pod.ref, e)
            return
        with self._cond:
            gone = self._pending.pop(pod.uid, None) is None
        if gone:  # stopped while we prepared it: its release found nothing yet, so give them back now
            self.lifecycle.release(pod.uid)
            return
        log.info("pod %s: VFs given to a pod started without the plugin", pod.ref)
