"""Prometheus metrics of the host service, on a registry of its own (no process-global state)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, Histogram, start_http_server
from prometheus_client import Counter as PromCounter
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class _LeaseCollector(Collector):
    """VFs per pool and state, read from the lease store at scrape time."""

    def __init__(self, counts: Callable[[], Counter[tuple[str, str]]]) -> None:
        self._counts = counts

    def collect(self) -> Iterator[Metric]:
        g = GaugeMetricFamily("vfhotplug_host_vfs", "VFs per pool and lease state", labels=["pool", "state"])
        for (pool, state), n in sorted(self._counts().items()):
            g.add_metric([pool, state], n)
        yield g


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self._phase = Histogram(
            "vfhotplug_host_phase_seconds",
            "Time spent per phase of attach/release (allocate, netlink, hotplug, libvirt_call, event_wait)",
            ["phase"],
            buckets=_BUCKETS,
            registry=self.registry,
        )
        self._call = Histogram(
            "vfhotplug_host_call_seconds",
            "Whole API calls",
            ["method"],
            buckets=_BUCKETS,
            registry=self.registry,
        )
        self._errors = PromCounter(
            "vfhotplug_host_errors",
            "API calls that failed, by gRPC status",
            ["method", "code"],
            registry=self.registry,
        )

    def watch_leases(self, counts: Callable[[], Counter[tuple[str, str]]]) -> None:
        self.registry.register(_LeaseCollector(counts))

    def observe(self, phase: str, seconds: float) -> None:
        self._phase.labels(phase).observe(seconds)

    def call(self, method: str, seconds: float) -> None:
        self._call.labels(method).observe(seconds)

    def error(self, method: str, code: str) -> None:
        self._errors.labels(method, code).inc()

    def serve(self, address: str) -> None:
        """Exposes /metrics over HTTP at host:port (a daemon thread)."""
        host, _, port = address.rpartition(":")
        start_http_server(int(port), addr=host.strip("[]"), registry=self.registry)
