"""The plugin's strict TOML config: the shipped example loads; mistakes name the file and key."""

from __future__ import annotations

from pathlib import Path

import pytest

from contract.errors import ConfigError
from vm_side import config
from vm_side.datapath_steps import steps_from_config
from vm_side.demand import Mode

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
    assert (
        cfg.vpp is None
        and cfg.dpdk.hugepages == Path("/dev/hugepages")
        and cfg.health.metrics_address is None
    )


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


def test_config_vpp_dpdk_health_tables(tmp_path: Path) -> None:
    text = MINIMAL + (
        '[vpp]\nsocket = "vpp/api.sock"\napi_dirs = ["api", "/usr/share/vpp/api"]\n'
        'memif_dir = "memif"\ncheck_interval_s = 1\n'
        '[dpdk]\nruntime_root = "dpdk"\nhugepages = "/mnt/huge"\n'
        '[health]\npoll_interval_s = 2\nmetrics_address = "127.0.0.1:9108"\n'
        '[cdi]\nspec_dir = "/etc/cdi"\n'
    )
    cfg = config.parse(text, tmp_path / "nri.toml")
    assert cfg.vpp is not None and cfg.vpp.socket == tmp_path / "vpp/api.sock"
    assert cfg.vpp.api_dirs == (tmp_path / "api", Path("/usr/share/vpp/api"))
    assert cfg.vpp.memif_dir == tmp_path / "memif" and cfg.vpp.check_interval_s == 1
    assert cfg.dpdk.runtime_root == tmp_path / "dpdk" and cfg.dpdk.hugepages == Path("/mnt/huge")
    assert cfg.health.metrics_address == ("127.0.0.1", 9108) and cfg.health.poll_interval_s == 2
    assert [s.name for s in steps_from_config(cfg)] == ["dpdk env", "vpp"]
    assert cfg.cdi.spec_dir == Path("/etc/cdi")
    assert config.parse(MINIMAL, tmp_path / "nri.toml").cdi.spec_dir == Path("/var/run/cdi")
    empty = config.parse(MINIMAL + "[vpp]\napi_dirs = []\n", tmp_path / "nri.toml")
    assert empty.vpp is not None and empty.vpp.api_dirs is None  # fetched from VPP


def test_config_without_vpp_builds_no_vpp_step(tmp_path: Path) -> None:
    cfg = config.parse(MINIMAL, tmp_path / "nri.toml")
    assert cfg.vpp is None
    steps = steps_from_config(cfg)
    assert not any(s.handles(Mode.VPP) for s in steps) and any(s.handles(Mode.DPDK) for s in steps)


@pytest.mark.parametrize(
    ("extra", "needle"),
    [
        ('[health]\nmetrics_address = "9108"\n', "metrics_address"),
        ('[vpp]\nsokcet = "x"\n', "sokcet"),
        ("[dpdk]\nruntime_root = 3\n", "runtime_root"),
        ('[cdi]\nspec_folder = "/etc/cdi"\n', "spec_folder"),
    ],
)
def test_config_errors_name_the_key(tmp_path: Path, extra: str, needle: str) -> None:
    with pytest.raises(ConfigError, match=needle):
        config.parse(MINIMAL + extra, tmp_path / "nri.toml")
