"""Every field of the plugin's config wrong in turn gets one line naming the file, the field and the fix;
the real entry (`python -m nri_plugin --config F`) turns one into exit status 2 and that line."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.config_walk import Field, Table, check_field, entry_fails_with_one_line, fields, leaves, refusal
from vm_side import config

FILE = Path("/cfg/nri.toml")
BASE: Table = {
    "log_level": "INFO",
    "nri": {"name": "vfhotplug", "index": "10", "socket": "nri.sock", "budget_warn_share": 0.5},
    "host": {
        "target": "127.0.0.1:50151",
        "ca": "ca.pem",
        "cert": "vm.pem",
        "key": "vm.key",
        "server_name": "host",
        "timeout_s": 5,
    },
    "pods": {
        "default_pool": "fast",
        "default_mode": "kernel",
        "pools": ["fast", "bulk"],
        "max_vfs_per_pod": 8,
        "mtu": 1500,
        "run_dir": "run",
        "state_dir": "state",
        "deadline_margin_s": 0.4,
        "sysfs_root": "sys",
    },
    "vpp": {"socket": "vpp.sock", "api_dirs": ["api"], "memif_dir": "memif", "check_interval_s": 2},
    "dpdk": {"runtime_root": "dpdk", "hugepages": "huge"},
    "health": {"poll_interval_s": 5, "metrics_address": "127.0.0.1:9108"},
    "cdi": {"spec_dir": "cdi"},
}
FIELDS = list(fields(config.parse, BASE, FILE))


def test_the_base_loads_and_every_table_is_walked():
    assert refusal(config.parse, BASE, FILE) is None
    assert {f.table for f in FIELDS} == {
        (),
        ("nri",),
        ("host",),
        ("pods",),
        ("vpp",),
        ("dpdk",),
        ("health",),
        ("cdi",),
    }
    assert {f.dotted for f in FIELDS} >= set(leaves(BASE))  # and any field the loader adds later


@pytest.mark.parametrize("field", FIELDS, ids=lambda f: f.dotted)
def test_every_field_wrong_in_turn_is_one_line_naming_it(field: Field):
    check_field(config.parse, BASE, FILE, field)


@pytest.mark.parametrize(
    ("change", "says"),
    [
        (("pods", "max_vfs_per_pod", 0), "pods.max_vfs_per_pod: 0 is outside 1..64"),
        (("host", "ca", "missing.pem"), "host.ca: cannot read"),  # found when connecting, not parsing
    ],
)
def test_the_plugin_entry_exits_2_with_one_line(tmp_path: Path, change, says):
    table, key, value = change
    doc: Table = {**BASE, "nri": {**BASE["nri"], "socket": str(tmp_path / "nri.sock")}}
    doc[table] = {**doc[table], key: value}
    entry_fails_with_one_line(["nri_plugin"], doc, tmp_path / "nri.toml", "vfhotplug-nri", says)
