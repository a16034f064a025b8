"""vfhotplug-nri: the NRI plugin process. Builds the adapters from the config and serves containerd.

External mode (default): connects to the NRI socket named in the config and reconnects whenever containerd
restarts. Pre-registered mode (containerd started us with NRI_PLUGIN_SOCKET): the config text arrives in
Configure, so the lifecycle is built then.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import FrameType

from prometheus_client import start_http_server

from contract.crash_points import CrashPoints
from contract.errors import ConfigError
from nri_plugin.plugin import VfPlugin
from nri_plugin.stub import Stub, StubError
from vm_side import config as plugin_config
from vm_side.assembly import build_lifecycle
from vm_side.dpdk_health import HealthMonitor
from vm_side.health_report import HEALTH_FILE, HealthPoller
from vm_side.lifecycle import PodLifecycle
from vm_side.sysfs import GuestSysfs
from vm_side.vpp_step import VppStep

log = logging.getLogger("vfhotplug.nri")


def _every(interval_s: float, fn: Callable[[], object], name: str) -> None:
    def loop() -> None:
        while True:
            time.sleep(interval_s)
            try:
                fn()
            except Exception:  # a round must never end the loop; the next one retries
                log.exception("%s failed", name)

    threading.Thread(target=loop, name=name, daemon=True).start()


def start_background(cfg: plugin_config.PluginConfig, lifecycle: PodLifecycle) -> None:
    """Journaled releases, data-path health (file + optional Prometheus endpoint), the VPP restart check."""
    lifecycle.worker.start()
    vpp = next((s for s in lifecycle.steps if isinstance(s, VppStep)), None)
    poller = HealthPoller(lifecycle.store, HealthMonitor(), cfg.state_dir / HEALTH_FILE, vpp)
    _every(cfg.health.poll_interval_s, poller.poll_once, "datapath-health")
    if cfg.health.metrics_address is not None:
        host, port = cfg.health.metrics_address
        try:
            start_http_server(port, host, registry=poller.monitor.registry)
            log.info("metrics on http://%s:%d/metrics", host, port)
        except OSError as e:  # pods must not fail for want of metrics: say so and serve on
            log.error("cannot serve metrics on %s:%d (%s); check [health] metrics_address", host, port, e)
    if vpp is not None and cfg.vpp is not None:
        _every(cfg.vpp.check_interval_s, lifecycle.reconcile_steps, "vpp-check")


class _PreregisteredPlugin(VfPlugin):
    """A pre-registered plugin learns its config from Configure; the lifecycle is built there."""

    def __init__(self) -> None:  # the lifecycle comes with the config
        pass

    def configure(self, config: str, runtime_name: str, runtime_version: str) -> None:
        cfg = plugin_config.parse(config, Path("<NRI config>"))
        self.lifecycle = build_lifecycle(cfg, cfg.host.connect(), crash_points=CrashPoints.from_env())
        start_background(cfg, self.lifecycle)


def main(argv: list[str] | None = None, sysfs: GuestSysfs | None = None) -> int:
    """`sysfs` replaces the guest sysfs adapter; only tests pass one (a kernel without vfio)."""
    parser = argparse.ArgumentParser(prog="vfhotplug-nri", description="vfhotplug NRI plugin for containerd")
    parser.add_argument(
        "--config", type=Path, default=None, help=f"plugin config (default {plugin_config.DEFAULT_PATH})"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
        stream=sys.stderr,
    )
    preregistered = "NRI_PLUGIN_SOCKET" in os.environ and args.config is None
    try:
        if preregistered:
            plugin: VfPlugin = _PreregisteredPlugin()
            stub = Stub(plugin)
        else:
            cfg = plugin_config.load(args.config or plugin_config.DEFAULT_PATH)
            logging.getLogger().setLevel(cfg.log_level)
            plugin = VfPlugin(build_lifecycle(cfg, cfg.host.connect(), sysfs, CrashPoints.from_env()))
            start_background(cfg, plugin.lifecycle)
            stub = Stub(
                plugin,
                name=cfg.nri.name,
                idx=cfg.nri.index,
                socket_path=cfg.nri.socket,
                budget_warn_share=cfg.nri.budget_warn_share,
            )
    except (ConfigError, StubError) as e:
        print(f"vfhotplug-nri: {e}", file=sys.stderr)
        return 2

    def _stop(signum: int, _frame: FrameType | None) -> None:
        log.info("signal %d: stopping", signum)
        stub.stop()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    try:
        stub.run()
    except StubError as e:
        print(f"vfhotplug-nri: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
