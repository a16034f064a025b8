"""Per-pod DPDK environments and DPDK health, against real dpdk-testpmd processes."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import pytest
from prometheus_client import generate_latest

from contract.pci import PciAddress
from tests.datapath import testpmd
from tests.datapath.conftest import make_vpp
from vm_side.dpdk_env import DpdkEnvError, DpdkEnvs, file_prefix, hugepage_files
from vm_side.dpdk_health import (
    DpdkSample,
    HealthMonitor,
    HealthState,
    PoolUsage,
    RingUsage,
    Telemetry,
    classify_dpdk,
    classify_vpp_buffers,
    parse_show_buffers,
)
from vm_side.vpp_pod import memif_wiring

POD_A = "aaaaaaaa-0000-4000-8000-000000000001"
POD_B = "bbbbbbbb-0000-4000-8000-000000000002"
VF = PciAddress.parse("0000:3b:02.1")
BUILDS = testpmd.builds()
NEWEST = testpmd.newest()
needs_testpmd = pytest.mark.skipif(not BUILDS, reason="no dpdk-testpmd: run testbed/dpdk/setup.sh")


# ---- environment --------------------------------------------------------------------------------


def test_cleanup_removes_only_this_pods_runtime_folder_and_hugepage_files(short_tmp: Path) -> None:
    huge = short_tmp / "huge"
    huge.mkdir()
    envs = DpdkEnvs(short_tmp / "run", huge)
    a, b = envs.prepare(POD_A, [VF]), envs.prepare(POD_B, [])
    assert a.file_prefix != b.file_prefix and a.runtime_dir.is_dir() and b.runtime_dir.is_dir()
    assert f"--file-prefix={a.file_prefix}" in a.eal_args and "--allow=0000:3b:02.1" in a.eal_args
    assert dict(a.env)["VFHOTPLUG_DPDK_EAL_ARGS"] == " ".join(a.eal_args)
    assert [(m.source, m.destination) for m in a.mounts] == [
        (str(a.runtime_dir), "/var/run/dpdk"),
        (str(huge), "/dev/hugepages"),
    ]
    # Files as EAL names them: <prefix>map_<n>; B's prefix extended by a character must survive too.
    for name in (
        f"{a.file_prefix}map_0",
        f"{a.file_prefix}map_17",
        f"{b.file_prefix}map_0",
        f"{a.file_prefix}xmap_0",
    ):
        (huge / name).write_bytes(b"")
    (a.runtime_dir / a.file_prefix).mkdir()
    (a.runtime_dir / a.file_prefix / "config").write_bytes(b"x")

    removed = envs.cleanup(a)
    assert not a.runtime_dir.exists() and b.runtime_dir.is_dir()
    assert sorted(p.name for p in huge.iterdir()) == sorted(
        [f"{b.file_prefix}map_0", f"{a.file_prefix}xmap_0"]
    )
    assert len(removed) == 3
    assert envs.cleanup(a) == []  # idempotent
    assert hugepage_files(huge, b.file_prefix) == [huge / f"{b.file_prefix}map_0"]
    with pytest.raises(DpdkEnvError, match="refusing"):
        DpdkEnvs(short_tmp / "elsewhere", huge).cleanup(b)
    assert file_prefix(POD_A) == a.file_prefix  # stable across plugin restarts


# ---- classifier (pure) --------------------------------------------------------------------------


def _sample(in_use: int | None, ring_used: int, cycles: int, at: float = 2.0) -> DpdkSample:
    return DpdkSample(
        "DPDK 24.11.8",
        (PoolUsage("mb_pool_0", 1000, in_use),),
        (RingUsage("app_ring", 1023, ring_used), RingUsage("MP_mb_pool_0", 2047, 2047)),
        ((1, cycles),),
        at,
    )


@pytest.mark.parametrize(
    ("prev", "cur", "state", "reason"),
    [
        (None, _sample(10, 0, 5), HealthState.HEALTHY, None),
        (_sample(10, 0, 5, 0), _sample(850, 0, 9), HealthState.DEGRADED, "mempool mb_pool_0 running low"),
        (_sample(10, 0, 5, 0), _sample(990, 0, 9), HealthState.UNHEALTHY, "mempool mb_pool_0 exhausted"),
        (_sample(10, 0, 5, 0), _sample(10, 1023, 9), HealthState.DEGRADED, "ring app_ring full"),
        (_sample(10, 1023, 5, 0), _sample(10, 1023, 9), HealthState.UNHEALTHY, "ring app_ring stuck full"),
        (_sample(10, 1023, 5, 1.5), _sample(10, 1023, 9), HealthState.DEGRADED, "ring app_ring full"),
        (_sample(10, 0, 5, 0), _sample(10, 0, 5), HealthState.UNHEALTHY, "lcore 1 stalled"),
        (_sample(10, 0, 5, 1.5), _sample(10, 0, 5), HealthState.HEALTHY, None),  # within the window
    ],
)
def test_classify_dpdk(prev, cur, state, reason) -> None:
    h = classify_dpdk(prev, cur)
    assert h.state is state
    assert (reason is None and h.reasons == ()) or any(r.startswith(reason) for r in h.reasons)


def test_classify_says_what_old_dpdk_cannot_report() -> None:
    old = DpdkSample("DPDK 22.11.11", (PoolUsage("mb_pool_0", 1000, None),), None, None)
    h = classify_dpdk(old, old)
    assert h.state is HealthState.HEALTHY
    assert any(">= 23.03" in n for n in h.notes) and any(">= 24.03" in n for n in h.notes)
    assert any("no rte_timer telemetry" in n for n in h.notes)


def test_vpp_buffer_pools_feed_the_same_view(make_standin, short_tmp: Path) -> None:
    standin = make_standin()
    vpp = make_vpp(short_tmp / "api.sock")
    vpp.connect()
    mon = HealthMonitor()
    assert mon.poll_vpp("vpp", vpp).state is HealthState.HEALTHY
    standin.model.buffers_used = 16590
    h = mon.poll_vpp("vpp", vpp)
    assert h.state is HealthState.UNHEALTHY and "VPP buffer pool default-numa-0 exhausted" in h.reasons[0]
    assert b'vfhotplug_pool_in_use{pod="vpp",pool="default-numa-0"} 16590.0' in generate_latest(mon.registry)
    standin.stop()
    assert mon.poll_vpp("vpp", vpp).state is HealthState.UNHEALTHY
    vpp.close()
    assert parse_show_buffers("Pool Name Index\n") == ()
    assert classify_vpp_buffers(()).state is HealthState.HEALTHY


# ---- real testpmd -------------------------------------------------------------------------------


@pytest.mark.dpdk
@needs_testpmd
@pytest.mark.parametrize("build", BUILDS, ids=[b.name for b in BUILDS])
def test_health_of_real_testpmd_and_cleanup(build, short_tmp: Path, caplog) -> None:
    envs = DpdkEnvs(short_tmp / "run", short_tmp / "huge")
    env = envs.prepare(POD_A, [])
    proc = testpmd.start_io_forwarding(build, env, short_tmp / "testpmd.log")
    try:
        mon = HealthMonitor()
        mon.poll_dpdk(POD_A, env.telemetry_socket)
        time.sleep(1.1)  # past the stall window: lcore cycles must have advanced
        h = mon.poll_dpdk(POD_A, env.telemetry_socket)
        assert h.state is HealthState.HEALTHY, h
        if build.name == "22.11":
            assert any("needs DPDK >= 24.03" in n for n in h.notes)
        else:
            assert h.notes == ()
        assert f'vfhotplug_datapath_health{{pod="{POD_A}"}} 0.0'.encode() in generate_latest(mon.registry)

        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        h = mon.poll_dpdk(POD_A, env.telemetry_socket)
        assert h.state is HealthState.UNHEALTHY and h.reasons[0].startswith("DPDK process gone")
        assert f"pod {POD_A}: data path unhealthy: DPDK process gone" in caplog.text
    finally:
        testpmd.stop(proc)
    envs.cleanup(env)
    assert not env.runtime_dir.exists()


@pytest.mark.dpdk
@pytest.mark.skipif(NEWEST is None or NEWEST.name == "22.11", reason="needs DPDK >= 24.03 (setup.sh)")
def test_dry_mempool_makes_real_testpmd_unhealthy(short_tmp: Path) -> None:
    assert NEWEST is not None
    env = DpdkEnvs(short_tmp / "run", short_tmp / "huge").prepare(POD_B, [])
    # txonly into a net_ring port nobody drains: the ring keeps 1023 mbufs of a 1025-mbuf pool.
    proc = testpmd.start(
        NEWEST,
        env.mounts[:1],
        ["-l", "0-1", *env.eal_args, "--vdev=net_ring0"],
        [
            "--auto-start",
            "--forward-mode=txonly",
            "--total-num-mbufs=1025",
            "--mbcache=0",
            "--record-core-cycles",
        ],
        short_tmp / "testpmd.log",
    )
    try:
        testpmd.wait_telemetry(env.telemetry_socket, proc, short_tmp / "testpmd.log")
        mon = HealthMonitor()
        time.sleep(0.3)
        mon.poll_dpdk(POD_B, env.telemetry_socket)
        time.sleep(1.1)
        h = mon.poll_dpdk(POD_B, env.telemetry_socket)
    finally:
        testpmd.stop(proc)
    assert h.state is HealthState.UNHEALTHY
    assert any(r.startswith("mempool mb_pool_0 exhausted") for r in h.reasons), h
    assert any(r.startswith("ring ETH_RXTX0_net_ring0 stuck full") for r in h.reasons), h


@pytest.mark.dpdk
@needs_testpmd
def test_two_testpmd_over_memif_with_the_pods_mount_and_env(short_tmp: Path) -> None:
    assert NEWEST is not None
    memif_dir = short_tmp / "memif"
    wiring = memif_wiring(memif_dir, POD_A, 1)
    envs = DpdkEnvs(short_tmp / "run", short_tmp / "huge")
    vpp_side, pod = envs.prepare(POD_B, []), envs.prepare(POD_A, [])
    with testpmd.memif_pair(NEWEST, vpp_side, pod, wiring, short_tmp):
        tel = Telemetry(vpp_side.telemetry_socket)
        deadline = time.monotonic() + 15
        while (tel.query("/ethdev/stats,0") or {}).get("ipackets", 0) == 0:
            assert time.monotonic() < deadline, (short_tmp / "client.log").read_text()[-2000:]
            time.sleep(0.2)
        assert json.dumps(tel.query("/ethdev/link_status,0")).find("UP") >= 0
        tel.close()
