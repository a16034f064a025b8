"""Data-path health per pod: DPDK telemetry (``dpdk_telemetry.v2`` in the pod's runtime folder) and, in
``vpp`` mode, VPP's buffer pools (``show buffers``), classified healthy / degraded / unhealthy with reasons.

What DPDK telemetry offers depends on its version, and the classifier says what it could not check:
mempool in-use counts need DPDK >= 23.03, ``/ring/*`` >= 24.03, ``/eal/lcore/usage`` >= 23.03 plus an app
that registers a usage callback (testpmd: ``--record-core-cycles``). DPDK has no telemetry for
``rte_timer``: lcore cycles that keep advancing are the liveness signal instead.
"""

from __future__ import annotations

import contextlib
import enum
import json
import logging
import os
import re
import socket
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, Gauge

from vm_side.vpp import Vpp, VppError

log = logging.getLogger(__name__)

_SUN_PATH_MAX = 107
_MEMPOOL_RING_PREFIX = "MP_"  # a mempool's backing ring holds its *free* objects: full means idle


class HealthState(enum.IntEnum):
    HEALTHY = 0
    DEGRADED = 1
    UNHEALTHY = 2


@dataclass(frozen=True)
class Health:
    state: HealthState
    reasons: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()  # what could not be checked, and why


@dataclass(frozen=True)
class Thresholds:
    pool_degraded: float = 0.80  # share of a pool in use
    pool_exhausted: float = 0.95
    # Stall / stuck verdicts compare with a sample at least this old: a busy 2-core VM can deschedule an
    # lcore for tens of ms, and testpmd's cycle counters are not updated on every poll.
    stall_window_s: float = 1.0


@dataclass(frozen=True)
class PoolUsage:
    name: str
    size: int
    in_use: int | None  # None: this DPDK does not report it


@dataclass(frozen=True)
class RingUsage:
    name: str
    capacity: int
    used: int


@dataclass(frozen=True)
class DpdkSample:
    version: str
    mempools: tuple[PoolUsage, ...]
    rings: tuple[RingUsage, ...] | None  # None: no ring telemetry
    lcore_cycles: tuple[tuple[int, int], ...] | None  # (lcore id, total cycles); None: not available
    taken_at: float = 0.0  # time.monotonic()


class TelemetryUnavailable(Exception):
    """The telemetry socket does not answer: the DPDK process is gone or not started."""


class Telemetry:
    """A client of one DPDK process's telemetry socket (SOCK_SEQPACKET, one JSON datagram per reply)."""

    def __init__(self, socket_path: Path, timeout: float = 1.0) -> None:
        self.socket_path = socket_path
        self._timeout = timeout
        self._sock: socket.socket | None = None
        self.hello: dict[str, Any] = {}

    def connect(self) -> None:
        if self._sock is not None:
            return
        s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        s.settimeout(self._timeout)
        try:
            _connect_unix(s, self.socket_path)
            self.hello = json.loads(s.recv(16384))
        except (OSError, ValueError) as e:
            s.close()
            raise TelemetryUnavailable(f"no DPDK telemetry at {self.socket_path}: {e}") from e
        self._max = int(self.hello.get("max_output_len", 16384))
        self._sock = s

    def query(self, command: str) -> Any:
        """The value of one command (``/mempool/info,mb_pool_0``); None if this DPDK does not know it."""
        self.connect()
        assert self._sock is not None
        try:
            self._sock.send(command.encode())
            raw = self._sock.recv(self._max + 1024)
        except OSError as e:
            self.close()
            raise TelemetryUnavailable(f"DPDK telemetry {self.socket_path} dropped: {e}") from e
        if not raw:
            self.close()
            raise TelemetryUnavailable(f"DPDK telemetry {self.socket_path} closed: the process is gone")
        reply = json.loads(raw)
        return reply.get(command.split(",", 1)[0])

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


def _connect_unix(s: socket.socket, path: Path) -> None:
    if len(str(path).encode()) <= _SUN_PATH_MAX:
        s.connect(str(path))
        return
    # A long runtime root can push the path past sun_path: connect through the folder's fd instead.
    fd = os.open(path.parent, os.O_PATH)
    try:
        s.connect(f"/proc/self/fd/{fd}/{path.name}")
    finally:
        os.close(fd)


def read_sample(tel: Telemetry) -> DpdkSample:
    tel.connect()
    pools = []
    for name in tel.query("/mempool/list") or ():
        info = tel.query(f"/mempool/info,{name}") or {}
        in_use = None
        if "common_pool_count" in info:  # DPDK >= 23.03
            # Objects not populated yet are neither free nor in use.
            populated = info.get("populated_size", info["size"])
            in_use = populated - info["common_pool_count"] - info.get("total_cache_count", 0)
        pools.append(PoolUsage(name, int(info.get("size", 0)), in_use))
    rings = None
    ring_names = tel.query("/ring/list")
    if ring_names is not None:
        rings = tuple(
            RingUsage(n, int(i["capacity"]), int(i["used_count"]))
            for n in ring_names
            if (i := tel.query(f"/ring/info,{n}"))
        )
    usage = tel.query("/eal/lcore/usage")
    lcores = None if not usage else tuple(zip(usage["lcore_ids"], usage["total_cycles"], strict=True))
    version = str(tel.hello.get("version", "DPDK ?"))
    return DpdkSample(version, tuple(pools), rings, lcores, time.monotonic())


def classify_dpdk(prev: DpdkSample | None, cur: DpdkSample, th: Thresholds = Thresholds()) -> Health:
    """Pure: a sample, and the baseline before it (None at first) -> health."""
    if prev is not None and cur.taken_at - prev.taken_at < th.stall_window_s:
        prev = None  # too recent to call anything stuck
    bad: list[str] = []
    warn: list[str] = []
    notes: list[str] = []
    for p in cur.mempools:
        if p.in_use is None:
            notes.append(f"mempool {p.name}: in-use count needs DPDK >= 23.03 ({cur.version})")
        else:
            _pool_verdict(f"mempool {p.name}", p.in_use, p.size, th, bad, warn)
    if cur.rings is None:
        notes.append(f"rings: ring telemetry needs DPDK >= 24.03 ({cur.version})")
    else:
        before = {r.name: r for r in (prev.rings or ())} if prev is not None else {}
        for r in cur.rings:
            if r.name.startswith(_MEMPOOL_RING_PREFIX) or r.used < r.capacity:
                continue
            if before.get(r.name) == r:
                bad.append(f"ring {r.name} stuck full ({r.used}/{r.capacity}) across two polls")
            else:
                warn.append(f"ring {r.name} full ({r.used}/{r.capacity})")
    if cur.lcore_cycles is None:
        notes.append(
            "lcores: liveness needs /eal/lcore/usage (DPDK >= 23.03 and an app usage callback); "
            "DPDK has no rte_timer telemetry"
        )
    elif prev is not None and prev.lcore_cycles is not None:
        seen = dict(prev.lcore_cycles)
        # 0 cycles: the lcore has not reported yet (just started), not a stall.
        bad += [
            f"lcore {c} stalled: cycles stuck at {t}" for c, t in cur.lcore_cycles if t and seen.get(c) == t
        ]
    return _verdict(bad, warn, notes)


def _pool_verdict(what: str, in_use: int, size: int, th: Thresholds, bad: list[str], warn: list[str]) -> None:
    share = in_use / size if size else 1.0
    if share >= th.pool_exhausted:
        bad.append(f"{what} exhausted: {in_use} of {size} in use")
    elif share >= th.pool_degraded:
        warn.append(f"{what} running low: {in_use} of {size} in use")


def _verdict(bad: list[str], warn: list[str], notes: list[str]) -> Health:
    state = HealthState.UNHEALTHY if bad else HealthState.DEGRADED if warn else HealthState.HEALTHY
    return Health(state, tuple(bad + warn), tuple(notes))


# ---- VPP ------------------------------------------------------------------------------------------

_BUFFERS_ROW = re.compile(r"(\S+)\s+\d+\s+\d+\s+\d+\s+\d+\s+(\d+)\s+(\d+)\s+(\d+)\s+(\d+)\s*")


@dataclass(frozen=True)
class VppBufferPool:
    name: str
    total: int
    avail: int
    cached: int
    used: int


def parse_show_buffers(text: str) -> tuple[VppBufferPool, ...]:
    """VPP ``show buffers``: Pool Name, Index, NUMA, Size, Data Size, Total, Avail, Cached, Used."""
    return tuple(
        VppBufferPool(m[1], int(m[2]), int(m[3]), int(m[4]), int(m[5]))
        for line in text.splitlines()
        if (m := _BUFFERS_ROW.fullmatch(line.strip() + " "))
    )


def classify_vpp_buffers(pools: Iterable[VppBufferPool], th: Thresholds = Thresholds()) -> Health:
    bad: list[str] = []
    warn: list[str] = []
    for p in pools:
        _pool_verdict(f"VPP buffer pool {p.name}", p.used, p.total, th, bad, warn)
    return _verdict(bad, warn, [])


# ---- monitor: side effects (sockets, metrics, logs) -----------------------------------------------


class HealthMonitor:
    """Polls each pod's data path, keeps the last health, exports gauges and logs changes."""

    def __init__(self, registry: CollectorRegistry | None = None, th: Thresholds = Thresholds()) -> None:
        self._th = th
        self._tel: dict[str, Telemetry] = {}
        self._prev: dict[str, DpdkSample] = {}
        self.health: dict[str, Health] = {}
        reg = registry if registry is not None else CollectorRegistry()
        self.registry = reg
        self._series: dict[str, set[tuple[Gauge, tuple[str, ...]]]] = {}
        self._state = Gauge(
            "vfhotplug_datapath_health", "0 healthy, 1 degraded, 2 unhealthy", ["pod"], registry=reg
        )
        self._pool_used = Gauge(
            "vfhotplug_pool_in_use", "mempool/buffers in use", ["pod", "pool"], registry=reg
        )
        self._pool_size = Gauge(
            "vfhotplug_pool_size", "mempool/buffer pool size", ["pod", "pool"], registry=reg
        )
        self._ring_used = Gauge(
            "vfhotplug_dpdk_ring_used", "DPDK ring entries used", ["pod", "ring"], registry=reg
        )
        self._ring_cap = Gauge(
            "vfhotplug_dpdk_ring_capacity", "DPDK ring capacity", ["pod", "ring"], registry=reg
        )

    def poll_dpdk(self, pod_uid: str, telemetry_socket: Path) -> Health:
        tel = self._tel.setdefault(pod_uid, Telemetry(telemetry_socket))
        try:
            cur = read_sample(tel)
        except TelemetryUnavailable as e:
            tel.close()
            self._prev.pop(pod_uid, None)
            return self._record(pod_uid, Health(HealthState.UNHEALTHY, (f"DPDK process gone: {e}",)))
        base = self._prev.get(pod_uid)
        health = classify_dpdk(base, cur, self._th)
        if base is None or cur.taken_at - base.taken_at >= self._th.stall_window_s:
            self._prev[pod_uid] = cur  # the baseline moves once per window, however often we poll
        for p in cur.mempools:
            self._set(self._pool_size, pod_uid, p.name, p.size)
            if p.in_use is not None:
                self._set(self._pool_used, pod_uid, p.name, p.in_use)
        for r in cur.rings or ():
            self._set(self._ring_used, pod_uid, r.name, r.used)
            self._set(self._ring_cap, pod_uid, r.name, r.capacity)
        return self._record(pod_uid, health)

    def poll_vpp(self, name: str, vpp: Vpp) -> Health:
        """VPP's buffer pools under ``name`` (VPP serves every vpp-mode pod of the VM)."""
        try:
            pools = parse_show_buffers(vpp.cli("show buffers"))
        except VppError as e:
            return self._record(name, Health(HealthState.UNHEALTHY, (f"VPP does not answer: {e}",)))
        for p in pools:
            self._set(self._pool_size, name, p.name, p.total)
            self._set(self._pool_used, name, p.name, p.used)
        return self._record(name, classify_vpp_buffers(pools, self._th))

    def forget(self, pod_uid: str) -> None:
        tel = self._tel.pop(pod_uid, None)
        if tel is not None:
            tel.close()
        self._prev.pop(pod_uid, None)
        self.health.pop(pod_uid, None)
        for gauge, labels in self._series.pop(pod_uid, set()):
            with contextlib.suppress(KeyError):
                gauge.remove(*labels)

    def status(self) -> Mapping[str, Health]:
        """For ``vfhotplug status``."""
        return dict(self.health)

    def _record(self, pod_uid: str, health: Health) -> Health:
        old = self.health.get(pod_uid)
        if old is None or (old.state, old.reasons) != (health.state, health.reasons):
            log.log(
                logging.INFO if health.state is HealthState.HEALTHY else logging.WARNING,
                "pod %s: data path %s%s",
                pod_uid,
                health.state.name.lower(),
                f": {'; '.join(health.reasons)}" if health.reasons else "",
            )
        self.health[pod_uid] = health
        self._set(self._state, pod_uid, None, int(health.state))
        return health

    def _set(self, gauge: Gauge, pod_uid: str, item: str | None, value: float) -> None:
        labels = (pod_uid,) if item is None else (pod_uid, item)
        gauge.labels(*labels).set(value)
        self._series.setdefault(pod_uid, set()).add((gauge, labels))
