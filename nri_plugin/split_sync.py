"""Gathering a Synchronize the runtime splits into parts (NRI v0.8+) until its last part arrives."""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field

from nri_plugin.nri_codec import container_info, pod_info
from nri_plugin.nri_pb import nri_pb2 as _nri
from nri_plugin.ttrpc import CODE_RESOURCE_EXHAUSTED, RpcError
from vm_side.runtime_model import ContainerInfo, PodInfo

log = logging.getLogger(__name__)
# A split Synchronize is held in memory until its last part: past either bound the runtime is taken to
# be broken and the gathering is refused (the runtime then drops the plugin, which reconnects).
MAX_SYNC_BYTES = 64 << 20
MAX_SYNC_PARTS = 1024


@dataclass
class SyncParts:
    """The parts of a split Synchronize gathered so far (one connection's)."""

    generation: int
    started: float
    deadline: float
    pods: list[PodInfo] = field(default_factory=list)
    containers: list[ContainerInfo] = field(default_factory=list)
    parts: int = 0
    size: int = 0


class SplitSync:
    """One gathering at a time, tied to the connection (generation) its first part came on."""

    def __init__(self, max_bytes: int = MAX_SYNC_BYTES) -> None:
        self._max_bytes = max_bytes
        self._lock = threading.Lock()
        self._generation = 0
        self._parts: SyncParts | None = None

    def new_connection(self) -> int:
        """Drops a gathering a reconnect cut short (the runtime starts over); the new generation."""
        with self._lock:
            self._generation += 1
            self._parts = None
            return self._generation

    def reset(self) -> None:
        """A new configuration starts a new synchronization."""
        with self._lock:
            self._parts = None

    def add(
        self, req: _nri.SynchronizeRequest, size: int, generation: int, started: float, deadline: float
    ) -> SyncParts | None:
        """Adds one part; the whole gathering once `req` is the last part, None while more are to come.

        Raises:
            RpcError: RESOURCE_EXHAUSTED, the parts went past the size or count limit.
        """
        with self._lock:
            parts = self._parts
            if parts is None or parts.generation != generation:
                parts = SyncParts(generation, started, deadline)
            parts.parts += 1
            parts.size += size
            if parts.size > self._max_bytes or parts.parts > MAX_SYNC_PARTS:
                self._parts = None
                raise RpcError(
                    CODE_RESOURCE_EXHAUSTED,
                    f"vfhotplug: split Synchronize refused after {parts.parts} parts and {parts.size} bytes "
                    f"(limits: {MAX_SYNC_PARTS} parts, {self._max_bytes} bytes); the runtime keeps "
                    "sending parts with more=true: check its NRI version and logs",
                )
            parts.pods.extend(pod_info(p) for p in req.pods)
            parts.containers.extend(container_info(c) for c in req.containers)
            if req.more:
                self._parts = parts
                log.debug("NRI: Synchronize part %d gathered, more to come", parts.parts)
                return None
            self._parts = None
            return parts
