"""The plugin's strict TOML config: the shipped example loads; mistakes name the file and key."""

from __future__ import annotations

from pathlib import Path

import pytest

from host_side.errors import ConfigError
from nri_plugin import config
from nri_plugin.demand import Mode

REPO = Path(__file__).resolve().parents[2]
MINIMAL = """
[host]
target = "127.0.0.1:1"
ca = "ca.pem"
cert = "vm.pem"
key = "vm.key"
"""


def test_shipped_example_loads() -> None:
    cfg = config.load(REPO / "config/nri.example.toml")
    assert (cfg.nri.name, cfg.nri.index) == ("vfhotplug", "10")
    assert cfg.lifecycle.defaults.pool == "fast" and cfg.lifecycle.defaults.mode is Mode.KERNEL
    assert cfg.lifecycle.defaults.pools == frozenset({"fast", "bulk"})
    assert cfg.host.cert == Path("/etc/vfhotplug/pki/worker-1.pem")


def test_minimal_config_gets_defaults_and_relative_paths(tmp_path: Path) -> None:
    cfg = config.parse(MINIMAL, tmp_path / "nri.toml")
    assert cfg.host.ca == tmp_path / "ca.pem"
    assert cfg.nri.socket == "/var/run/nri/nri.sock"
    assert cfg.lifecycle.defaults.max_vfs_per_pod == 8


@pytest.mark.parametrize(
    ("extra", "needle"),
    [
        ("colour = 1", "unknown key(s): colour"),
        ('[nri]\nindex = "1"', "nri.index"),
        ('[pods]\ndefault_mode = "warp"', "pods.default_mode"),
        ("[pods]\nmax_vfs_per_pod = 0", "pods.max_vfs_per_pod"),
        ("[nri]\nbudget_warn_share = 2.0", "nri.budget_warn_share"),
        ('log_level = "LOUD"', "log_level"),
    ],
)
def test_mistakes_name_the_key(tmp_path: Path, extra: str, needle: str) -> None:
    text = extra + "\n" + MINIMAL if not extra.startswith("[") else MINIMAL + "\n" + extra
    with pytest.raises(ConfigError) as err:
        config.parse(text, tmp_path / "nri.toml")
    assert needle in str(err.value) and "nri.toml" in str(err.value)


def test_missing_host_table_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="host"):
        config.parse("", tmp_path / "nri.toml")
