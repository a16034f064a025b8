"""Builds the pod lifecycle from the plugin config: the one place both entries (NRI plugin, OCI hooks)
construct their adapters, so they can never drift apart."""

from __future__ import annotations

from contract.crash_points import NO_CRASHES, CrashPoints
from contract.errors import ConfigError
from contract.host_api import HostApi
from vm_side.cdi_store import CdiStore
from vm_side.config import PluginConfig
from vm_side.datapath_steps import steps_from_config
from vm_side.lifecycle import PodLifecycle
from vm_side.netlink import GuestNetlink
from vm_side.sysfs import GuestSysfs


def build_lifecycle(
    cfg: PluginConfig, host: HostApi, sysfs: GuestSysfs | None = None, crash_points: CrashPoints = NO_CRASHES
) -> PodLifecycle:
    """`sysfs` replaces the guest sysfs adapter (tests on a kernel without vfio); `crash_points` is for tests.

    Raises:
        ConfigError: the state folder cannot be made (names pods.state_dir).
    """
    try:
        return PodLifecycle(
            host,
            sysfs or GuestSysfs(cfg.sysfs_root),
            GuestNetlink(None),
            cfg.state_dir,
            cfg.lifecycle,
            steps=steps_from_config(cfg, crash_points),
            crash_points=crash_points,
            cdi=CdiStore(cfg.cdi.spec_dir),
        )
    except OSError as e:
        raise ConfigError(
            f"{cfg.path}: pods.state_dir: cannot make the records folder in {cfg.state_dir}: {e.strerror}; "
            "point it at a writable folder"
        ) from e
