"""The `vfhotplug-host` config the lab's host service runs with, one writer for both levels (pure).

Paths in it are relative to the config's folder (the service takes them so): `pki/` holds the lab PKI,
`state/` the lease database, `run/admin.sock` the admin socket.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass

Value = str | int | float | list[str]


@dataclass(frozen=True)
class ServiceConfig:
    """What the lab's levels set; every key left out keeps the service's own default."""

    backend: str  # "emulated-nic" (VM side, no SR-IOV here) or "libvirt" (real VFs)
    libvirt_uri: str
    port: int  # the gRPC + mTLS listener on 127.0.0.1
    pool: str
    pfs: tuple[str, ...]
    identity: str  # the VM's client certificate name, which is its [vms.*] key
    domain: str
    quota: int
    sysfs_root: str = "/sys"  # a relative one is an emulated tree in the config's folder
    attach_s: float = 30.0
    detach_s: float = 30.0
    vf_range: str | None = None  # e.g. "0-7"; None: every VF of the PFs
    hotplug_mode: str | None = None
    metrics_port: int | None = None
    sync_grace_s: float | None = None
    reconcile_interval_s: float | None = None


def _value(value: Value) -> str:
    # JSON's string escapes are valid TOML basic-string escapes.
    if isinstance(value, list):
        return "[" + ", ".join(json.dumps(v) for v in value) + "]"
    return json.dumps(value) if isinstance(value, str) else str(value)


def _table(name: str, keys: Mapping[str, Value | None]) -> list[str]:
    lines = [f"[{name}]"] if name else []
    return lines + [f"{key} = {_value(v)}" for key, v in keys.items() if v is not None] + [""]


def service_toml(cfg: ServiceConfig) -> str:
    """The config file's text."""
    metrics = None if cfg.metrics_port is None else f"127.0.0.1:{cfg.metrics_port}"
    top = {
        "backend": cfg.backend,
        "hotplug_mode": cfg.hotplug_mode,
        "libvirt_uri": cfg.libvirt_uri,
        "state_dir": "state",
        "sysfs_root": cfg.sysfs_root,
        "metrics_address": metrics,
    }
    listen = {
        "tcp": f"127.0.0.1:{cfg.port}",
        "ca": "pki/ca.pem",
        "cert": "pki/host.pem",
        "key": "pki/host.key",
        "admin_socket": "run/admin.sock",
    }
    timeouts = {
        "attach_s": cfg.attach_s,
        "detach_s": cfg.detach_s,
        "sync_grace_s": cfg.sync_grace_s,
        "reconcile_interval_s": cfg.reconcile_interval_s,
    }
    pool = {"pfs": list(cfg.pfs), "vfs": None if cfg.vf_range is None else [cfg.vf_range]}
    vm: dict[str, Value] = {"domain": cfg.domain, "quota": cfg.quota, "pools": [cfg.pool]}
    tables: list[tuple[str, Mapping[str, Value | None]]] = [
        ("", top),
        ("listen", listen),
        ("timeouts", timeouts),
        (f"pools.{cfg.pool}", pool),
        (f"vms.{cfg.identity}", vm),
    ]
    lines = ["# vfhotplug-host config of the lab (written by lab.service_config)"]
    for name, keys in tables:
        lines += _table(name, keys)
    return "\n".join(lines)
