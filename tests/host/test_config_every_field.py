"""Every field of the host's config wrong in turn gets one line naming the file, the field and the fix;
the real entry (`python -m host_side serve --config F`) turns one into exit status 2 and that line."""

from __future__ import annotations

from pathlib import Path

import pytest

from host_side import config
from tests.config_walk import Field, Table, check_field, entry_fails_with_one_line, fields, leaves, refusal

FILE = Path("/cfg/host.toml")
BASE: Table = {
    "backend": "sim",
    "state_dir": "state",
    "sysfs_root": "sys",
    "libvirt_uri": "qemu:///system",
    "hotplug_mode": "hostdev",
    "emulated_nic_model": "e1000e",
    "metrics_address": "127.0.0.1:9100",
    "listen": {
        "tcp": "127.0.0.1:50151",
        "ca": "pki/ca.pem",
        "cert": "pki/host.pem",
        "key": "pki/host.key",
        "crl": "pki/crl.pem",
        "admin_socket": "admin.sock",
    },
    "timeouts": {
        "attach_s": 30,
        "detach_s": 20,
        "sync_grace_s": 30,
        "reconcile_interval_s": 60,
        "warm_refill_interval_s": 5,
    },
    "limits": {"rate_per_s": 50, "burst": 200},
    "pools": {
        "fast": {
            "pfs": ["ens1f0", "0000:3b:00.1"],
            "vfs": ["0-7"],
            "default_vlan": 100,
            "allow_trust": True,
            "allow_spoofchk_off": False,
            "max_per_vm": 4,
            "warm_spares": 1,
        }
    },
    "vms": {"worker-1": {"domain": "k8s-worker-1", "quota": 8, "pools": ["fast"]}},
    "sim": {"guest_sysfs_root": "guest", "netns": "guest"},
}
FIELDS = list(fields(config.parse, BASE, FILE))


def test_the_base_loads_and_every_table_is_walked():
    assert refusal(config.parse, BASE, FILE) is None
    tables = {f.table for f in FIELDS}
    assert tables == {
        (),
        ("listen",),
        ("timeouts",),
        ("limits",),
        ("pools", "fast"),
        ("vms", "worker-1"),
        ("sim",),
    }
    assert {f.dotted for f in FIELDS} >= set(leaves(BASE))  # and any field the loader adds later


@pytest.mark.parametrize("field", FIELDS, ids=lambda f: f.dotted)
def test_every_field_wrong_in_turn_is_one_line_naming_it(field: Field):
    check_field(config.parse, BASE, FILE, field)


@pytest.mark.parametrize(
    ("change", "says"),
    [
        ((("pools", "fast"), "default_vlan", 5000), "pools.fast.default_vlan: 5000 is outside 0..4094"),
        ((("listen",), "key", "missing.pem"), "listen.key: cannot read"),  # found when serving
        (((), "state_dir", "/dev/null/state"), "state_dir: cannot open the lease database"),
    ],
)
def test_the_host_entry_exits_2_with_one_line(tmp_path: Path, change, says):
    (tmp_path / "sys").mkdir()
    where, key, value = change
    doc: Table = {**BASE, "metrics_address": None, "listen": {**BASE["listen"], "tcp": "127.0.0.1:0"}}
    del doc["metrics_address"]
    doc["pools"] = {"fast": {"pfs": ["ens1f0"], "default_vlan": 100}}
    table = doc
    for p in where:
        table[p] = table = {**table[p]}
    table[key] = value
    # --log-level error: the start-up warnings of a half-configured host (PF not found) are not the point
    args = ["host_side", "serve", "--log-level", "error"]
    entry_fails_with_one_line(args, doc, tmp_path / "host.toml", "vfhotplug-host", says)
