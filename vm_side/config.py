"""The plugin's config (strict TOML): unknown keys and bad values are errors that name the key.

It comes from a file (`vfhotplug-nri --config F`) or, for a pre-registered plugin, as the text containerd
hands over in Configure (from /etc/nri/conf.d/NN-vfhotplug.conf).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from contract.errors import ConfigError
from contract.toml_table import REQUIRED, TomlTable, parse_toml, read_config
from vm_side.demand import MTU_MAX, MTU_MIN, DemandDefaults, Mode
from vm_side.lifecycle import LifecycleConfig

if TYPE_CHECKING:
    from host_side.api.client import HostClient

DEFAULT_PATH = Path("/etc/vfhotplug/nri.toml")
# host:port, [v6]:port, or a gRPC name scheme (dns:, ipv4:, ipv6:, unix:) with what follows.
_TARGET_RE = re.compile(r"(\[[0-9a-fA-F:]+\]|[A-Za-z0-9.-]+):[0-9]{1,5}|(dns|ipv4|ipv6|unix):\S+")


@dataclass(frozen=True)
class NriConfig:
    name: str = "vfhotplug"
    index: str = "10"
    socket: str = "/var/run/nri/nri.sock"
    budget_warn_share: float = 0.5


@dataclass(frozen=True)
class HostEndpoint:
    target: str  # host:port of the host service (mTLS)
    ca: Path
    cert: Path
    key: Path
    server_name: str | None = None
    timeout_s: float = 10.0
    config_file: Path = DEFAULT_PATH  # names the file in errors

    def connect(self) -> HostClient:
        """Raises:
        ConfigError: a PEM file cannot be read (named by its key in the config)."""
        from host_side.api.client import HostClient  # grpc is heavy: the hooks' fast paths never import it

        for key, pem in (("ca", self.ca), ("cert", self.cert), ("key", self.key)):
            try:
                pem.read_bytes()
            except OSError as e:
                raise ConfigError(
                    f"{self.config_file}: host.{key}: cannot read {pem}: {e.strerror}; "
                    "point it at the VM's PEM file (see `vfhotplug-host ca issue`)"
                ) from e
        return HostClient(self.target, ca=self.ca, cert=self.cert, key=self.key, server_name=self.server_name)


@dataclass(frozen=True)
class VppConfig:
    """[vpp]: present means vpp-mode pods are served by the VM's VPP at `socket`."""

    socket: Path = Path("/run/vpp/api.sock")
    api_dirs: tuple[Path, ...] | None = (Path("/usr/share/vpp/api"),)  # None: fetch them from VPP
    memif_dir: Path = Path("/run/vfhotplug/memif")
    check_interval_s: float = 2.0  # how soon a VPP restart is noticed and the pods re-created


@dataclass(frozen=True)
class DpdkConfig:
    runtime_root: Path = Path("/run/vfhotplug/dpdk")
    hugepages: Path = Path("/dev/hugepages")


@dataclass(frozen=True)
class CdiConfig:
    """[cdi]: where dpdk pods' CDI specs go; it must be one of the runtime's CDI folders (containerd 2.x
    and podman read /etc/cdi and /var/run/cdi)."""

    spec_dir: Path = Path("/var/run/cdi")


@dataclass(frozen=True)
class HealthConfig:
    poll_interval_s: float = 5.0
    metrics_address: tuple[str, int] | None = None  # Prometheus /metrics; None: not served


@dataclass(frozen=True)
class PluginConfig:
    nri: NriConfig
    host: HostEndpoint
    lifecycle: LifecycleConfig
    state_dir: Path
    sysfs_root: Path
    log_level: str = "INFO"
    vpp: VppConfig | None = None
    dpdk: DpdkConfig = DpdkConfig()
    health: HealthConfig = HealthConfig()
    path: Path = DEFAULT_PATH  # the file it came from, for errors found when it is used
    cdi: CdiConfig = CdiConfig()


def parse(text: str, path: Path) -> PluginConfig:
    top = TomlTable(parse_toml(text, path), "", path)
    log_level = top.text("log_level", "INFO")
    if log_level not in ("DEBUG", "INFO", "WARNING", "ERROR"):
        raise top.error("log_level", f"{log_level!r} is not one of DEBUG, INFO, WARNING, ERROR")
    nri = _nri(top.table("nri") or TomlTable({}, "nri", path))
    ht = top.table("host", required=True)
    assert ht is not None
    host = _host(ht, path)
    lifecycle, state_dir, sysfs_root = _pods(top.table("pods") or TomlTable({}, "pods", path), host)
    vpp = _vpp(top.table("vpp"), path)
    dpdk = _dpdk(top.table("dpdk") or TomlTable({}, "dpdk", path))
    health = _health(top.table("health") or TomlTable({}, "health", path))
    cdi = _cdi(top.table("cdi") or TomlTable({}, "cdi", path))
    top.finish()
    return PluginConfig(
        nri=nri,
        host=host,
        lifecycle=lifecycle,
        state_dir=state_dir,
        sysfs_root=sysfs_root,
        log_level=log_level,
        vpp=vpp,
        dpdk=dpdk,
        health=health,
        path=path,
        cdi=cdi,
    )


def _nri(nt: TomlTable) -> NriConfig:
    nri = NriConfig(
        name=nt.name_check("name", nt.text("name", "vfhotplug")),
        index=nt.text("index", "10"),
        socket=nt.text("socket", "/var/run/nri/nri.sock"),
        budget_warn_share=nt.number("budget_warn_share", 0.5, 0.05, 1.0),
    )
    if len(nri.index) != 2 or not nri.index.isdigit():
        raise nt.error("index", f"{nri.index!r} must be exactly two digits, e.g. '10'")
    nt.finish()
    return nri


def _host(ht: TomlTable, path: Path) -> HostEndpoint:
    ca, cert, key = ht.path("ca", REQUIRED), ht.path("cert", REQUIRED), ht.path("key", REQUIRED)
    assert ca is not None and cert is not None and key is not None
    target = ht.text("target", REQUIRED)
    if not _TARGET_RE.fullmatch(target):
        raise ht.error("target", f"{target!r} is not host:port of the host service, e.g. '192.0.2.1:50151'")
    host = HostEndpoint(
        target=target,
        ca=ca,
        cert=cert,
        key=key,
        server_name=ht.text("server_name"),
        timeout_s=ht.seconds("timeout_s", 10.0),
        config_file=path,
    )
    ht.finish()
    return host


def _pods(pt: TomlTable, host: HostEndpoint) -> tuple[LifecycleConfig, Path, Path]:
    """[pods]: the pods' lifecycle settings, the state folder and the sysfs root."""
    defaults = _demand_defaults(pt)
    run_dir = pt.path("run_dir", "/run/vfhotplug/pods")
    state_dir = pt.path("state_dir", "/var/lib/vfhotplug")
    assert run_dir is not None and state_dir is not None
    lifecycle = LifecycleConfig(
        defaults=defaults,
        run_dir=run_dir,
        margin_s=pt.seconds("deadline_margin_s", 0.4),
        host_timeout_s=host.timeout_s,
    )
    sysfs_root = pt.path("sysfs_root", "/sys")
    assert sysfs_root is not None
    pt.finish()
    return lifecycle, state_dir, sysfs_root


def _demand_defaults(pt: TomlTable) -> DemandDefaults:
    mode_text = pt.text("default_mode", "kernel")
    try:
        mode = Mode(mode_text)
    except ValueError:
        raise pt.error(
            "default_mode", f"{mode_text!r} is not one of {', '.join(m.value for m in Mode)}"
        ) from None
    pools = pt.strings("pools", None)
    for pool in pools or ():
        pt.name_check("pools", pool)
    default_pool = pt.name_check("default_pool", pt.text("default_pool", "default"))
    if pools is not None and default_pool not in pools:
        raise pt.error(
            "default_pool", f"{default_pool!r} is not in pods.pools; add it there or pick one of them"
        )
    mtu = pt.integer("mtu", None, MTU_MIN, MTU_MAX)
    return DemandDefaults(
        pool=default_pool,
        mode=mode,
        max_vfs_per_pod=pt.integer("max_vfs_per_pod", 8, 1, 64),
        mtu=mtu,
        pools=frozenset(pools) if pools is not None else None,
    )


def _dpdk(dt: TomlTable) -> DpdkConfig:
    runtime_root, hugepages = (
        dt.path("runtime_root", "/run/vfhotplug/dpdk"),
        dt.path("hugepages", "/dev/hugepages"),
    )
    assert runtime_root is not None and hugepages is not None
    dt.finish()
    return DpdkConfig(runtime_root, hugepages)


def _cdi(ct: TomlTable) -> CdiConfig:
    spec_dir = ct.path("spec_dir", "/var/run/cdi")
    assert spec_dir is not None
    ct.finish()
    return CdiConfig(spec_dir)


def _vpp(vt: TomlTable | None, path: Path) -> VppConfig | None:
    if vt is None:
        return None
    sock, memif_dir = vt.path("socket", "/run/vpp/api.sock"), vt.path("memif_dir", "/run/vfhotplug/memif")
    assert sock is not None and memif_dir is not None
    dirs = vt.strings("api_dirs", ["/usr/share/vpp/api"])
    # An empty list: fetch the definitions from VPP itself (get_api_json, VPP >= 24.06).
    api_dirs = tuple(path.parent / d for d in dirs) if dirs else None  # relative: to the config file
    cfg = VppConfig(sock, api_dirs, memif_dir, vt.seconds("check_interval_s", 2.0))
    vt.finish()
    return cfg


def _health(ht: TomlTable) -> HealthConfig:
    interval = ht.seconds("poll_interval_s", 5.0)
    addr = ht.text("metrics_address")
    metrics = None
    if addr is not None:
        host, _, port = addr.rpartition(":")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ht.error("metrics_address", f"{addr!r} is not host:port, e.g. '127.0.0.1:9108'")
        metrics = (host.strip("[]"), int(port))
    ht.finish()
    return HealthConfig(interval, metrics)


def load(path: Path) -> PluginConfig:
    return parse(read_config(path), path)
