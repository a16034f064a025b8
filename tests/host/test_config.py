from __future__ import annotations

from pathlib import Path

import pytest

from contract.errors import ConfigError
from host_side import config

EXAMPLE = Path(__file__).resolve().parents[2] / "config/host.example.toml"

MINIMAL = """
backend = "libvirt"
state_dir = "state"
[listen]
admin_socket = "run/admin.sock"
[pools.p]
pfs = ["ens1f0"]
[vms.vm1]
domain = "d1"
"""


def test_example_config_loads_with_every_section():
    cfg = config.load(EXAMPLE)
    assert cfg.backend == "libvirt" and cfg.hotplug_mode == "interface-hostdev"
    fast = cfg.pools["fast"]
    assert fast.pfs == ("ens1f0", "0000:3b:00.1")
    assert fast.vf_indexes == frozenset(range(16))
    assert (fast.default_vlan, fast.max_per_vm, fast.warm_spares) == (100, 8, 2)
    assert cfg.vms["worker-2"].pools == ("bulk",)
    assert cfg.vms["worker-1"].quota == 16
    assert cfg.listen.tcp == "0.0.0.0:50151" and cfg.listen.ca == Path("/etc/vfhotplug/pki/ca.pem")
    assert cfg.timeouts.sync_grace_s == 30
    assert cfg.vm_for_domain("k8s-worker-1") is cfg.vms["worker-1"]


def test_relative_paths_are_taken_from_the_config_folder(tmp_path):
    cfg = config.parse(MINIMAL, tmp_path / "host.toml")
    assert cfg.state_dir == tmp_path / "state"
    assert cfg.listen.admin_socket == tmp_path / "run/admin.sock"
    assert cfg.vms["vm1"].pools == ("p",) and cfg.vms["vm1"].quota == 8


@pytest.mark.parametrize(
    ("change", "names"),
    [
        (("[pools.p]", "[pools.p]\nwarm_spare = 1"), "unknown key(s) in [pools.p]: warm_spare"),
        (('backend = "libvirt"', 'backend = "libvirt"\nbackends = 1'), "unknown key(s): backends"),
        (('backend = "libvirt"', 'backend = "kvm"'), "backend: 'kvm' is not one of"),
        (
            ('pfs = ["ens1f0"]', 'pfs = ["ens1f0"]\ndefault_vlan = 4095'),
            "pools.p.default_vlan: 4095 is outside 0..4094",
        ),
        (
            ('pfs = ["ens1f0"]', 'pfs = ["ens1f0"]\nallow_trust = 1'),
            "pools.p.allow_trust: expected true or false",
        ),
        (('pfs = ["ens1f0"]', 'pfs = ["0000:zz:00.0"]'), "pools.p.pfs: bad PCI address"),
        (('pfs = ["ens1f0"]', "pfs = []"), "pools.p.pfs: needs at least one PF"),
        (('pfs = ["ens1f0"]', 'pfs = ["ens1f0"]\nvfs = ["7-3"]'), "pools.p.vfs: range '7-3' must go up"),
        (('domain = "d1"', 'domain = "d1"\npools = ["q"]'), "vms.vm1.pools: unknown pool 'q'"),
        (('domain = "d1"', ""), "vms.vm1.domain: missing"),
        (('domain = "d1"', 'domain = "d1"\nquota = -1'), "vms.vm1.quota: -1 is outside"),
        (('admin_socket = "run/admin.sock"', 'tcp = "0.0.0.0:1"'), "listen.tcp: TCP needs mTLS"),
        (('admin_socket = "run/admin.sock"', 'tcp = "nohost"'), "listen.tcp: 'nohost' is not host:port"),
        (('backend = "libvirt"', 'backend = "sim"'), "sim: backend 'sim' needs a [sim] table"),
        (("[pools.p]", "[timeouts]\nattach_s = 0\n[pools.p]"), "timeouts.attach_s: 0.0 is not a duration"),
        (("[vms.vm1]", '[vms.vm0]\ndomain = "d1"\n[vms.vm1]'), "two identities name the same libvirt domain"),
    ],
)
def test_bad_config_names_the_key(tmp_path, change, names):
    old, new = change
    with pytest.raises(ConfigError) as err:
        config.parse(MINIMAL.replace(old, new, 1), tmp_path / "host.toml")
    assert names in str(err.value)
    assert str(tmp_path / "host.toml") in str(err.value)


def test_not_toml_and_missing_file_are_clear_errors(tmp_path):
    with pytest.raises(ConfigError, match="not valid TOML"):
        config.parse("backend = ", tmp_path / "x.toml")
    with pytest.raises(ConfigError, match=r"cannot read config .*missing\.toml"):
        config.load(tmp_path / "missing.toml")
