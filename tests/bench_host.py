"""Host service benchmark: Attach+Release per second through gRPC (TCP+mTLS) with the fake backend and
durable SQLite (WAL, synchronous=FULL), at 64 and 4096 VFs, and the service's RSS.

`python -m tests.bench_host` (or `main()` from `make bench`). The service is the real process
(tests.host.fake_service); only libvirt and netlink are fakes.
"""

from __future__ import annotations

import shutil
import signal
import tempfile
import threading
import time
from pathlib import Path

from host_side import pki
from host_side.client import HostClient
from host_side.contract import VfRequest
from tests.host.conftest import free_port, write_config
from tests.host.fake_service import launch
from tests.host.sysfs_tree import make_pf

SECONDS = 4.0


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _run(tmp: Path, pki_dir: Path, total_vfs: int) -> tuple[float, float, float]:
    """(sequential ops/s, 4-caller ops/s, RSS MB) for one inventory size."""
    per_pf = min(256, total_vfs // 2)
    pf_count = total_vfs // per_pf
    pfs = []
    for i in range(pf_count):
        pf, name = f"0000:{0x10 + 2 * i:02x}:00.0", f"ens{i}f0"
        make_pf(tmp / "sys", pf, name, per_pf, numa=i % 2, vf_bus=0x80 + i, first_group=1000 + 300 * i)
        pfs.append(name)
    cfg = write_config(tmp, pki_dir=pki_dir, port=free_port(), quota=64, pfs=tuple(pfs))
    port = int(cfg.read_text().split('tcp = "127.0.0.1:')[1].split('"')[0])
    proc = launch(cfg, tmp / "fake")
    try:

        def client(vm: str) -> HostClient:
            return HostClient(
                f"127.0.0.1:{port}",
                ca=pki_dir / "ca.pem",
                cert=pki_dir / f"{vm}.pem",
                key=pki_dir / f"{vm}.key",
            )

        def loop(vm: str, counter: list[int], until: float) -> None:
            with client(vm) as c:
                i = 0
                while time.monotonic() < until:
                    pod = f"{vm}-{i}"
                    c.attach(pod, pod, [VfRequest("net")], f"a-{pod}", 10)
                    c.release(pod, f"r-{pod}", 10)
                    i += 1
                counter.append(i)

        with client("vm-a") as c:  # warm-up: connections, first pages of SQLite
            for i in range(20):
                c.attach(f"w{i}", "w", [VfRequest("net")], f"w{i}", 10)
                c.release(f"w{i}", f"wr{i}", 10)
        seq: list[int] = []
        loop("vm-b", seq, time.monotonic() + SECONDS)
        par: list[int] = []
        until = time.monotonic() + SECONDS
        threads = [
            threading.Thread(target=loop, args=(vm, par, until)) for vm in ("vm-a", "vm-b", "vm-c", "vm-d")
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        return seq[0] / SECONDS, sum(par) / SECONDS, _rss_mb(proc.pid)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=15)


def main() -> None:
    root = Path(tempfile.mkdtemp(prefix="vfh-bench-"))
    try:
        pki_dir = root / "pki"
        pki.init_ca(pki_dir)
        pki.issue(pki_dir, "host", server=True, sans=["127.0.0.1"])
        for vm in ("vm-a", "vm-b", "vm-c", "vm-d"):
            pki.issue(pki_dir, vm)
        results = {}
        for n in (64, 4096):
            (root / str(n)).mkdir()
            results[n] = _run(root / str(n), pki_dir, n)
            seq, par, rss = results[n]
            print(
                f"host bench: {n:5d} VFs: Attach+Release {seq:7.1f}/s sequential, {par:7.1f}/s with 4 VMs; "
                f"service RSS {rss:.1f} MB"
            )
        ratio = results[64][0] / results[4096][0]
        print(f"host bench: 64 VFs vs 4096 VFs sequential rate ratio {ratio:.2f}x (target <= 2x)")
    finally:
        shutil.rmtree(root)


if __name__ == "__main__":
    main()
