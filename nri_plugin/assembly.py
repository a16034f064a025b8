"""Builds the pod lifecycle from the plugin config: the one place both entries (NRI plugin, OCI hooks)
construct their adapters, so they can never drift apart."""

from __future__ import annotations

from host_side.contract import HostApi
from nri_plugin.config import PluginConfig
from nri_plugin.datapath_steps import steps_from_config
from nri_plugin.lifecycle import PodLifecycle
from nri_plugin.netlink import GuestNetlink
from nri_plugin.sysfs import GuestSysfs


def build_lifecycle(
    cfg: PluginConfig, host: HostApi, sysfs: GuestSysfs | None = None, crash_after: str | None = None
) -> PodLifecycle:
    """`sysfs` replaces the guest sysfs adapter (tests on a kernel without vfio); `crash_after` is the
    tests' crash injection point. The VFs appear in the guest's own netns, the one we run in."""
    return PodLifecycle(
        host,
        sysfs or GuestSysfs(cfg.sysfs_root),
        GuestNetlink(None),
        cfg.state_dir,
        cfg.lifecycle,
        steps=steps_from_config(cfg, crash_after=crash_after),
        crash_after=crash_after,
    )
