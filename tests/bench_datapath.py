"""Data-path figures for ``make bench``: per-pod VPP programming time against the VPP API stand-in, one
health poll of a real testpmd, and the memif packet rate between two testpmd through the pod's wiring."""

from __future__ import annotations

import shutil
import statistics
import tempfile
import time
from dataclasses import replace
from pathlib import Path

from contract.host_api import GrantedVf
from contract.pci import PciAddress
from tests.datapath import testpmd
from tests.datapath.conftest import make_vpp
from tests.vpp_standin.server import VppStandin
from vm_side.demand import Mode, VfSlot
from vm_side.dpdk_env import DpdkEnvs
from vm_side.dpdk_health import HealthMonitor, Telemetry
from vm_side.pod_record import PodRecord, PodState, StepDone, VfBinding
from vm_side.vpp_pod import VppPods, memif_wiring
from vm_side.vpp_step import VppStep

PODS = 100
POLLS = 50
RATE_WINDOW_S = 3.0


def bench_vpp_programming(tmp: Path) -> None:
    vfs = [PciAddress.parse("0000:3b:02.1"), PciAddress.parse("0000:3b:02.2")]
    with VppStandin(tmp / "api.sock"):
        vpp = make_vpp(tmp / "api.sock")
        pods = VppPods(vpp, tmp / "memif")
        program, undo = [], []
        for n in range(PODS):
            uid = f"bench-{n:04d}"
            t0 = time.perf_counter()
            rec = pods.program(uid, vfs)
            t1 = time.perf_counter()
            pods.undo(rec)
            undo.append(time.perf_counter() - t1)
            program.append(t1 - t0)
        vpp.close()
    print(
        f"vpp: program pod with 2 VFs (attach, memif, xconnect, up, tag), median over {PODS}: "
        f"{statistics.median(program) * 1e3:.2f} ms; undo {statistics.median(undo) * 1e3:.2f} ms (stand-in)"
    )


def bench_vpp_reconcile(tmp: Path, pods_n: int = 20) -> None:
    """The plugin's background VPP check: cost when VPP is intact, and re-creating every pod after a
    VPP restart (what a vpp pod's data path is down for, plus the check interval)."""
    with VppStandin(tmp / "api.sock") as standin:
        vpp = make_vpp(tmp / "api.sock")
        step = VppStep(VppPods(vpp, tmp / "memif"))
        recs = []
        for n in range(pods_n):
            uid = f"bench-{n:04d}"
            notes = step.apply(_vpp_record(uid, n), time.monotonic() + 5)
            recs.append(replace(_vpp_record(uid, n), steps=(StepDone(step.name, notes),)))
        intact = []
        for _ in range(10):
            t0 = time.perf_counter()
            step.reconcile(lambda: recs)
            intact.append(time.perf_counter() - t0)
        standin.restart()
        t0 = time.perf_counter()
        step.reconcile(lambda: recs)
        recreate = time.perf_counter() - t0
        vpp.close()
    print(
        f"vpp: background check with {pods_n} intact pods, median over 10: "
        f"{statistics.median(intact) * 1e3:.1f} ms; re-create all {pods_n} after a VPP restart: "
        f"{recreate * 1e3:.0f} ms (stand-in)"
    )


def _vpp_record(uid: str, n: int) -> PodRecord:
    vfs = []
    for i in range(2):
        gpci = PciAddress(0, 0x40 + n, 0, i)
        grant = GrantedVf(f"L{n}-{i}", "net", gpci, gpci, "02:fe:00:00:00:01", 0, None, 0)
        vfs.append(VfBinding(VfSlot(0, "net", Mode.VPP, f"net{i}"), grant, gpci, bound=True))
    return PodRecord(uid, "bench", "", PodState.READY, 1, uid, tuple(v.slot for v in vfs), tuple(vfs))


def bench_dpdk(tmp: Path) -> None:
    build = testpmd.newest()
    if build is None:
        print("dpdk: no dpdk-testpmd (run testbed/dpdk/setup.sh)")
        return
    envs = DpdkEnvs(tmp / "run", tmp / "huge")
    env = envs.prepare("bench-health", [])
    proc = testpmd.start_io_forwarding(build, env, tmp / "health.log")
    try:
        mon = HealthMonitor()
        times = []
        for _ in range(POLLS):
            t0 = time.perf_counter()
            mon.poll_dpdk("bench-health", env.telemetry_socket)
            times.append(time.perf_counter() - t0)
            time.sleep(0.01)
        print(
            f"dpdk {build.name}: one health poll of testpmd (mempools, rings, lcores), median over {POLLS}: "
            f"{statistics.median(times) * 1e3:.2f} ms (target < 5 ms); "
            f"state {mon.health['bench-health'].state.name}"
        )
    finally:
        testpmd.stop(proc)
        envs.cleanup(env)
    bench_memif(build, tmp, envs)


def bench_memif(build: testpmd.TestpmdBuild, tmp: Path, envs: DpdkEnvs) -> None:
    wiring = memif_wiring(tmp / "memif", "bench-pod", 1)
    side, pod = envs.prepare("bench-vpp-side", []), envs.prepare("bench-pod", [])
    try:
        with testpmd.memif_pair(build, side, pod, wiring, tmp):
            tel = Telemetry(side.telemetry_socket)
            deadline = time.monotonic() + 15
            while _ipackets(tel) == 0 and time.monotonic() < deadline:
                time.sleep(0.2)
            start, t0 = _ipackets(tel), time.monotonic()
            time.sleep(RATE_WINDOW_S)
            rate = (_ipackets(tel) - start) / (time.monotonic() - t0)
            tel.close()
        print(
            "memif: 64-byte packets, pod testpmd -> VPP-side testpmd via the pod's mount/env: "
            f"{rate / 1e6:.2f} Mpps"
        )
    finally:
        envs.cleanup(side)
        envs.cleanup(pod)


def _ipackets(tel: Telemetry) -> int:
    return int((tel.query("/ethdev/stats,0") or {}).get("ipackets", 0))


def main() -> None:
    tmp = Path(tempfile.mkdtemp(prefix="vfh-bench-"))
    try:
        bench_vpp_programming(tmp)
        bench_vpp_reconcile(tmp)
        bench_dpdk(tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
