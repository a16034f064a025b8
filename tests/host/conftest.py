"""Fixtures of the host tests: a sysfs tree with two PFs, a lab PKI, configs, an engine over fakes."""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from host_side import config, pki
from host_side.api.client import HostClient
from host_side.backends.base import Observe
from host_side.engine import Engine
from host_side.inventory import SysfsInventory
from host_side.leases import LeaseStore
from host_side.metrics import Metrics
from host_side.server import HostServer
from testbed.sysfs_tree import make_pf
from testbed.waiting import free_port
from tests.host.fakes import FakeDomain, FakeHotplug, FakeVfNetlink

VMS = ("vm-a", "vm-b", "vm-c", "vm-d")


@dataclass(frozen=True)
class Pki:
    folder: Path

    def pair(self, name: str) -> tuple[Path, Path]:
        return self.folder / f"{name}.pem", self.folder / f"{name}.key"


@pytest.fixture(scope="session")
def lab_pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    """One CA with a server certificate for 127.0.0.1 and a client certificate per VM (and a stranger)."""
    folder = tmp_path_factory.mktemp("pki")
    pki.init_ca(folder)
    pki.issue(folder, "host", server=True, sans=["127.0.0.1", "localhost"])
    for name in (*VMS, "stranger"):
        pki.issue(folder, name)
    return Pki(folder)


@pytest.fixture(scope="session")
def rogue_pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    """Another CA, issuing a certificate with a valid VM's name."""
    folder = tmp_path_factory.mktemp("rogue")
    pki.init_ca(folder, "rogue CA")
    pki.issue(folder, "vm-a")
    return Pki(folder)


def build_sysfs(root: Path, vfs_per_pf: int = 8) -> None:
    """Two PFs on NUMA nodes 0 and 1, each VF alone in its IOMMU group."""
    make_pf(root, "0000:3b:00.0", "ens1f0", vfs_per_pf, numa=0, vf_bus=0x3C, first_group=100)
    make_pf(root, "0000:5e:00.0", "ens2f0", vfs_per_pf, numa=1, vf_bus=0x5F, first_group=300)


def write_config(
    tmp: Path,
    *,
    pki_dir: Path | None = None,
    port: int | None = None,
    quota: int = 4,
    warm: int = 0,
    extra_pool: str = "",
    timeouts: str = "",
    limits: str = "",
    crl: bool = False,
    pfs: tuple[str, ...] = ("ens1f0", "0000:5e:00.0"),
) -> Path:
    tcp = ""
    if pki_dir is not None and port is not None:
        tcp = (
            f'tcp = "127.0.0.1:{port}"\nca = "{pki_dir}/ca.pem"\n'
            f'cert = "{pki_dir}/host.pem"\nkey = "{pki_dir}/host.key"\n'
        )
        tcp += f'crl = "{pki_dir}/crl.pem"\n' if crl else ""
    vms = "".join(f'[vms.{vm}]\ndomain = "dom-{vm}"\nquota = {quota}\n\n' for vm in VMS)
    text = f"""
backend = "sim"
state_dir = "state"
sysfs_root = "sys"

[sim]
guest_sysfs_root = "guest"

[listen]
{tcp}admin_socket = "run/admin.sock"

[timeouts]
attach_s = 5
detach_s = 1
sync_grace_s = 0.5
{timeouts}

[limits]
{limits}

[pools.net]
pfs = {json.dumps(list(pfs))}
warm_spares = {warm}
allow_trust = true
{extra_pool}

{vms}"""
    path = tmp / "host.toml"
    path.write_text(text)
    return path


@dataclass
class Bed:
    """An engine over a real sysfs tree and SQLite file, with fake libvirt and netlink."""

    cfg: config.HostConfig
    engine: Engine
    store: LeaseStore
    hotplug: FakeHotplug
    netlink: FakeVfNetlink

    def vm(self, identity: str = "vm-a") -> config.VmConfig:
        return self.cfg.vms[identity]


def make_bed(tmp: Path, *, observe: Observe | None = None, **kw: object) -> Bed:
    build_sysfs(tmp / "sys")
    cfg = config.load(write_config(tmp, **kw))  # type: ignore[arg-type]
    store = LeaseStore(cfg.state_dir / "leases.sqlite3")
    hotplug = FakeHotplug({vm.domain: FakeDomain() for vm in cfg.vms.values()})
    netlink = FakeVfNetlink()
    inventory = SysfsInventory(cfg.sysfs_root, list(cfg.pools.values()))
    engine = Engine(cfg, inventory, store, hotplug, netlink, observe=observe)
    engine.reconcile(startup=True)
    return Bed(cfg, engine, store, hotplug, netlink)


@pytest.fixture
def bed(tmp_path: Path) -> Iterator[Bed]:
    b = make_bed(tmp_path)
    yield b
    b.store.close()


@dataclass
class Service:
    bed: Bed
    port: int
    pki: Pki
    metrics: Metrics

    def client(self, name: str = "vm-a", pki: Pki | None = None) -> HostClient:
        cert, key = (pki or self.pki).pair(name)
        return HostClient(f"127.0.0.1:{self.port}", ca=self.pki.folder / "ca.pem", cert=cert, key=key)

    def admin(self) -> HostClient:
        return HostClient.unix(self.bed.cfg.listen.admin_socket)


@contextmanager
def running_service(lab_pki: Pki, **kw: object) -> Iterator[Service]:
    """The real HostServer (TCP+mTLS on 127.0.0.1, admin socket) over an engine with fakes."""
    tmp = Path(tempfile.mkdtemp(prefix="vfh-"))  # short: a unix socket path must fit in 108 bytes
    port = free_port()
    metrics = Metrics()
    bed = make_bed(tmp, observe=metrics.observe, pki_dir=lab_pki.folder, port=port, **kw)
    metrics.watch_leases(bed.store.counts)
    server = HostServer(bed.engine, bed.cfg, metrics)
    server.start()
    try:
        yield Service(bed, port, lab_pki, metrics)
    finally:
        server.stop(0)
        bed.store.close()
        shutil.rmtree(tmp)


@pytest.fixture
def service(lab_pki: Pki) -> Iterator[Service]:
    with running_service(lab_pki) as s:
        yield s
