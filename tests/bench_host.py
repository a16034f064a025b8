"""Host service benchmark: Attach+Release per second through gRPC (TCP+mTLS) with the fake backend and
durable SQLite (WAL, synchronous=FULL), at 64 and 4096 VFs, and the service's RSS.

`python -m tests.bench_host` (or `main()` from `make bench`). The service is the real process
(tests.host.fake_service); only libvirt and netlink are fakes.
"""

from __future__ import annotations

import os
import platform
import shutil
import signal
import tempfile
import threading
import time
from pathlib import Path

from contract.host_api import VfRequest
from host_side import pki
from host_side.api.client import HostClient
from testbed.sysfs_tree import make_pf
from testbed.waiting import free_port
from tests.host.conftest import VMS, write_config
from tests.host.fake_service import launch

WINDOW_S = 2.0
ROUNDS = 3  # windows per size, alternating sizes, so slow drift of the disk hits both alike


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


class _Bed:
    """One running service with `total_vfs` VFs in 2..16 PFs."""

    def __init__(self, tmp: Path, pki_dir: Path, total_vfs: int) -> None:
        per_pf = min(256, total_vfs // 2)
        pfs = []
        for i in range(total_vfs // per_pf):
            pf, name = f"0000:{0x10 + 2 * i:02x}:00.0", f"ens{i}f0"
            make_pf(tmp / "sys", pf, name, per_pf, numa=i % 2, vf_bus=0x80 + i, first_group=1000 + 300 * i)
            pfs.append(name)
        # The bench measures the service flat out, so no VM may meet the rate limit.
        cfg = write_config(
            tmp,
            pki_dir=pki_dir,
            port=free_port(),
            quota=64,
            pfs=tuple(pfs),
            limits="rate_per_s = 1000000\nburst = 1000000",
        )
        self.port = int(cfg.read_text().split('tcp = "127.0.0.1:')[1].split('"')[0])
        self.pki_dir = pki_dir
        self.proc = launch(cfg, tmp / "fake", in_memory=True)
        self._n = 0

    def client(self, vm: str) -> HostClient:
        d = self.pki_dir
        return HostClient(
            f"127.0.0.1:{self.port}", ca=d / "ca.pem", cert=d / f"{vm}.pem", key=d / f"{vm}.key"
        )

    def rate(self, vms: tuple[str, ...]) -> float:
        """Attach+Release cycles per second over one window, one caller per VM."""
        counts: list[int] = []
        until = time.monotonic() + WINDOW_S

        def loop(vm: str) -> None:
            with self.client(vm) as c:
                n = 0
                while time.monotonic() < until:
                    self._n += 1
                    pod = f"{vm}-{self._n}"
                    c.attach(pod, pod, [VfRequest("net")], f"a-{pod}", 10)
                    c.release(pod, f"r-{pod}", 10)
                    n += 1
                counts.append(n)

        threads = [threading.Thread(target=loop, args=(vm,)) for vm in vms]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        return sum(counts) / WINDOW_S

    def stop(self) -> float:
        rss = _rss_mb(self.proc.pid)
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(timeout=15)
        return rss


def main() -> None:
    print(
        f"host bench on {platform.node()} ({os.cpu_count()} cores, Python {platform.python_version()}): "
        "gRPC over TCP+mTLS, SQLite WAL (fsync before each side effect), fake libvirt/netlink in memory"
    )
    root = Path(tempfile.mkdtemp(prefix="vfh-bench-"))
    beds: dict[int, _Bed] = {}
    try:
        pki_dir = root / "pki"
        pki.init_ca(pki_dir)
        pki.issue(pki_dir, "host", server=True, sans=["127.0.0.1"])
        for vm in VMS:
            pki.issue(pki_dir, vm)
        for n in (64, 4096):
            (root / str(n)).mkdir()
            beds[n] = _Bed(root / str(n), pki_dir, n)
            beds[n].rate(("vm-a",))  # warm-up: connections, SQLite pages
        seq: dict[int, float] = {64: 0.0, 4096: 0.0}
        par: dict[int, float] = {64: 0.0, 4096: 0.0}
        for _ in range(ROUNDS):
            for n, bed in beds.items():
                seq[n] = max(seq[n], bed.rate(("vm-b",)))
                par[n] = max(par[n], bed.rate(VMS))
        for n, bed in beds.items():
            print(
                f"host bench: {n:5d} VFs: Attach+Release {seq[n]:6.1f}/s one caller, "
                f"{par[n]:6.1f}/s with 4 VMs (target >= 500/s at 4096); "
                f"service RSS {bed.stop():.1f} MB (target <= 60 MB)"
            )
        beds.clear()
        print(f"host bench: 4096 VFs cost {seq[64] / seq[4096]:.2f}x of 64 VFs per call (target <= 2x)")
    finally:
        for bed in beds.values():
            bed.stop()
        shutil.rmtree(root)


if __name__ == "__main__":
    main()
