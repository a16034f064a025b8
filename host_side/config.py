"""The host service's configuration: one strict TOML file -> frozen dataclasses.

Unknown keys and bad values are errors that name the file and the key; relative paths are taken from the
config file's folder, so a config and its certificates can move together.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from contract.pci import PciAddress
from contract.toml_table import REQUIRED as _REQUIRED
from contract.toml_table import TomlTable as _Table
from contract.toml_table import parse_toml, read_config

BACKENDS = ("libvirt", "emulated-nic", "sim")
HOTPLUG_MODES = ("interface-hostdev", "hostdev")
_HOSTPORT_RE = re.compile(r"(\[[0-9a-fA-F:]+\]|[A-Za-z0-9.-]+):(\d{1,5})")
_LIBVIRT_URI_RE = re.compile(r"[a-z][a-z0-9]*(\+[a-z0-9]+)?://\S*")  # qemu:///system, qemu+ssh://h/system
_NIC_MODEL_RE = re.compile(r"[A-Za-z0-9_-]{1,32}")  # a QEMU NIC model: e1000e, virtio, igb


@dataclass(frozen=True)
class PoolConfig:
    name: str
    pfs: tuple[str, ...]  # PF netdev names or PCI addresses, as written
    vf_indexes: frozenset[int] | None  # None: every VF of the PFs
    default_vlan: int
    allow_trust: bool  # may a pod ask for trust on
    allow_spoofchk_off: bool  # may a pod turn spoof checking off
    max_per_vm: int  # 0: no per-VM limit for this pool
    warm_spares: int  # unassigned VFs kept attached to each VM of the pool


@dataclass(frozen=True)
class VmConfig:
    identity: str  # the client certificate's common name
    domain: str  # libvirt domain name or UUID
    quota: int  # VFs the VM may hold at once, over all pools
    pools: tuple[str, ...]  # pools the VM may use


@dataclass(frozen=True)
class ListenConfig:
    tcp: str | None  # host:port with mTLS, or None for admin socket only
    ca: Path | None
    cert: Path | None
    key: Path | None
    crl: Path | None  # revoked VM certificates, signed by the CA; reloaded with the rest
    admin_socket: Path


@dataclass(frozen=True)
class Timeouts:
    attach_s: float
    detach_s: float
    sync_grace_s: float
    reconcile_interval_s: float
    warm_refill_interval_s: float


@dataclass(frozen=True)
class Limits:
    rate_per_s: float  # calls each VM may make per second, sustained
    burst: int  # calls a VM may make at once after being idle


@dataclass(frozen=True)
class SimConfig:
    guest_sysfs_root: Path
    netns: str | None


@dataclass(frozen=True)
class HostConfig:
    path: Path
    state_dir: Path
    sysfs_root: Path
    libvirt_uri: str
    backend: str
    hotplug_mode: str
    emulated_nic_model: str
    metrics_address: str | None
    listen: ListenConfig
    timeouts: Timeouts
    limits: Limits
    pools: Mapping[str, PoolConfig]
    vms: Mapping[str, VmConfig]  # by identity
    sim: SimConfig | None

    def vm_for_domain(self, domain: str) -> VmConfig | None:
        return next((vm for vm in self.vms.values() if vm.domain == domain), None)


def _vf_indexes(t: _Table, key: str) -> frozenset[int] | None:
    """`vfs = ["0-7", "12"]`: index ranges of the PFs' VFs that belong to the pool."""
    specs = t.strings(key, None)
    if specs is None:
        return None
    out: set[int] = set()
    for spec in specs:
        m = re.fullmatch(r"(\d+)(?:-(\d+))?", spec.strip())
        if m is None:
            raise t.error(key, f"{spec!r} is not an index or a range like '0-7'")
        lo, hi = int(m.group(1)), int(m.group(2) or m.group(1))
        if lo > hi or hi > 255:
            raise t.error(key, f"range {spec!r} must go up, within 0..255")
        out.update(range(lo, hi + 1))
    return frozenset(out)


def _pool(name: str, t: _Table) -> PoolConfig:
    pfs = t.strings("pfs", _REQUIRED)
    if not pfs:
        raise t.error("pfs", "needs at least one PF (netdev name like 'ens1f0' or PCI address)")
    for pf in pfs:
        if ":" in pf:
            try:
                PciAddress.parse(pf)
            except ValueError as e:
                raise t.error("pfs", str(e)) from e
        elif not re.fullmatch(r"[A-Za-z0-9_.-]{1,15}", pf):
            raise t.error("pfs", f"{pf!r} is neither a netdev name nor a PCI address")
    pool = PoolConfig(
        name=name,
        pfs=tuple(pfs),
        vf_indexes=_vf_indexes(t, "vfs"),
        default_vlan=t.integer("default_vlan", 0, 0, 4094),
        allow_trust=t.flag("allow_trust", False),
        allow_spoofchk_off=t.flag("allow_spoofchk_off", False),
        max_per_vm=t.integer("max_per_vm", 0, 0, 4096),
        warm_spares=t.integer("warm_spares", 0, 0, 64),
    )
    t.finish()
    return pool


def _listen(t: _Table) -> ListenConfig:
    tcp = t.text("tcp")
    if tcp is not None and not _HOSTPORT_RE.fullmatch(tcp):
        raise t.error("tcp", f"{tcp!r} is not host:port (e.g. '0.0.0.0:50151')")
    ca, cert, key, crl = t.path("ca"), t.path("cert"), t.path("key"), t.path("crl")
    if tcp is not None and None in (ca, cert, key):
        raise t.error("tcp", "TCP needs mTLS: set ca, cert and key (see `vfhotplug-host ca --help`)")
    admin = t.path("admin_socket", "/run/vfhotplug/host.sock")
    assert admin is not None
    t.finish()
    return ListenConfig(tcp=tcp, ca=ca, cert=cert, key=key, crl=crl, admin_socket=admin)


def parse(text: str, path: Path) -> HostConfig:
    """Parses and checks a config; `path` names the file in errors and anchors relative paths."""
    top = _Table(parse_toml(text, path), "", path)
    backend = top.text("backend", _REQUIRED)
    if backend not in BACKENDS:
        raise top.error("backend", f"{backend!r} is not one of {', '.join(BACKENDS)}")
    mode = top.text("hotplug_mode", "interface-hostdev")
    if mode not in HOTPLUG_MODES:
        raise top.error("hotplug_mode", f"{mode!r} is not one of {', '.join(HOTPLUG_MODES)}")
    metrics = top.text("metrics_address")
    if metrics is not None and not _HOSTPORT_RE.fullmatch(metrics):
        raise top.error("metrics_address", f"{metrics!r} is not host:port, e.g. '127.0.0.1:9100'")
    state_dir, sysfs_root = top.path("state_dir", _REQUIRED), top.path("sysfs_root", "/sys")
    assert state_dir is not None and sysfs_root is not None
    listen_t = top.table("listen", required=True)
    assert listen_t is not None
    listen = _listen(listen_t)

    timeouts = _timeouts(top.table("timeouts") or _Table({}, "timeouts", path))
    limits = _limits(top.table("limits") or _Table({}, "limits", path))
    pools = {name: _pool(name, sub) for name, sub in top.subtables("pools")}
    if not pools:
        raise top.error("pools", "define at least one pool, e.g. [pools.fast] pfs = ['ens1f0']")
    vms = _vms(top, pools)
    sim = _sim(top.table("sim"))
    if backend == "sim" and sim is None:
        raise top.error("sim", "backend 'sim' needs a [sim] table with guest_sysfs_root")

    uri, model = top.text("libvirt_uri", "qemu:///system"), top.text("emulated_nic_model", "e1000e")
    if not _LIBVIRT_URI_RE.fullmatch(uri):
        raise top.error("libvirt_uri", f"{uri!r} is not a libvirt URI like 'qemu:///system'")
    if not _NIC_MODEL_RE.fullmatch(model):
        raise top.error("emulated_nic_model", f"{model!r} is not a QEMU NIC model like 'e1000e'")
    cfg = HostConfig(
        path=path,
        state_dir=state_dir,
        sysfs_root=sysfs_root,
        libvirt_uri=uri,
        backend=backend,
        hotplug_mode=mode,
        emulated_nic_model=model,
        metrics_address=metrics,
        listen=listen,
        timeouts=timeouts,
        limits=limits,
        pools=pools,
        vms=vms,
        sim=sim,
    )
    top.finish()
    return cfg


def _timeouts(tt: _Table) -> Timeouts:
    timeouts = Timeouts(
        attach_s=tt.seconds("attach_s", 30.0),
        detach_s=tt.seconds("detach_s", 20.0),
        sync_grace_s=tt.seconds("sync_grace_s", 30.0),
        reconcile_interval_s=tt.seconds("reconcile_interval_s", 60.0),
        warm_refill_interval_s=tt.seconds("warm_refill_interval_s", 5.0),
    )
    tt.finish()
    return timeouts


def _limits(lt: _Table) -> Limits:
    # Defaults far above a VM's normal pace (a few calls per pod start) so only a runaway VM meets them.
    limits = Limits(
        rate_per_s=lt.number("rate_per_s", 50.0, 0.01, 1_000_000.0),
        burst=lt.integer("burst", 200, 1, 1_000_000),
    )
    lt.finish()
    return limits


def _vms(top: _Table, pools: Mapping[str, PoolConfig]) -> dict[str, VmConfig]:
    """[vms.IDENTITY] tables: each VM's libvirt domain, quota and the pools it may use."""
    vms: dict[str, VmConfig] = {}
    for ident, sub in top.subtables("vms"):
        vm_pools = sub.strings("pools", list(pools))
        for p in vm_pools:
            if p not in pools:
                raise sub.error("pools", f"unknown pool {p!r}; defined pools: {', '.join(sorted(pools))}")
        vms[ident] = VmConfig(
            identity=ident,
            domain=sub.text("domain", _REQUIRED),
            quota=sub.integer("quota", 8, 0, 4096),
            pools=tuple(vm_pools),
        )
        sub.finish()
    domains = [vm.domain for vm in vms.values()]
    if len(set(domains)) != len(domains):
        raise top.error("vms", "two identities name the same libvirt domain; give each VM its own identity")
    return vms


def _sim(sim_t: _Table | None) -> SimConfig | None:
    if sim_t is None:
        return None
    root = sim_t.path("guest_sysfs_root", _REQUIRED)
    assert root is not None
    sim = SimConfig(guest_sysfs_root=root, netns=sim_t.text("netns"))
    sim_t.finish()
    return sim


def load(path: Path) -> HostConfig:
    return parse(read_config(path), path)
