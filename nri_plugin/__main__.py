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
from pathlib import Path
from types import FrameType

from host_side.client import HostClient
from host_side.errors import ConfigError
from nri_plugin import config as plugin_config
from nri_plugin.lifecycle import PodLifecycle
from nri_plugin.netlink import GuestNetlink
from nri_plugin.plugin import VfPlugin
from nri_plugin.stub import Stub, StubError
from nri_plugin.sysfs import GuestSysfs

log = logging.getLogger("vfhotplug.nri")


def build_lifecycle(cfg: plugin_config.PluginConfig) -> PodLifecycle:
    host = HostClient(
        cfg.host.target,
        ca=cfg.host.ca,
        cert=cfg.host.cert,
        key=cfg.host.key,
        server_name=cfg.host.server_name,
    )
    return PodLifecycle(
        host,
        GuestSysfs(cfg.sysfs_root),
        GuestNetlink(),
        cfg.state_dir,
        cfg.lifecycle,
    )


class _PreregisteredPlugin(VfPlugin):
    """A pre-registered plugin learns its config from Configure; the lifecycle is built there."""

    def __init__(self) -> None:  # the lifecycle comes with the config
        pass

    def configure(self, config: str, runtime_name: str, runtime_version: str) -> None:
        cfg = plugin_config.parse(config, Path("<NRI config>"))
        self.lifecycle = build_lifecycle(cfg)
        self.lifecycle.worker.start()


def main(argv: list[str] | None = None) -> int:
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
            plugin = VfPlugin(build_lifecycle(cfg))
            plugin.lifecycle.worker.start()
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
