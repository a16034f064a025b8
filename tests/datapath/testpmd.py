"""Running Debian's real dpdk-testpmd the way a pod would: in its own mount namespace where the pod's
mounts (runtime folder as /var/run/dpdk, memif socket folder) are bind-mounted over a private /run.

Builds: bookworm's 22.11 (``/usr/bin/dpdk-testpmd``) and trixie's 24.11 under build/dpdk/trixie, run
through trixie's own loader (testbed/dpdk/setup.sh installs both).
"""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from vm_side.dpdk_env import DpdkPodEnv
from vm_side.dpdk_health import DpdkSample, Telemetry, TelemetryUnavailable, read_sample
from vm_side.runtime_model import Mount

REPO = Path(__file__).resolve().parents[2]
TRIXIE = REPO / "build" / "dpdk" / "trixie" / "fs"
_PMDS = ("mempool_ring", "net_null", "net_ring", "net_memif")


@dataclass(frozen=True)
class TestpmdBuild:
    name: str
    command: tuple[str, ...]


def builds() -> list[TestpmdBuild]:
    """Available testpmd builds, newest first."""
    found = []
    if (TRIXIE / "usr/bin/dpdk-testpmd").exists():
        lib = TRIXIE / "usr/lib/x86_64-linux-gnu"
        pmd = lib / "dpdk/pmds-25.0"
        # Preloading the PMDs registers their drivers (a -d folder must not be world-writable).
        preload = " ".join(str(pmd / f"librte_{p}.so.25") for p in _PMDS)
        found.append(
            TestpmdBuild(
                "24.11",
                (
                    str(lib / "ld-linux-x86-64.so.2"),
                    "--library-path",
                    f"{lib}:{pmd}",
                    "--preload",
                    preload,
                    str(TRIXIE / "usr/bin/dpdk-testpmd"),
                ),
            )
        )
    if (system := shutil.which("dpdk-testpmd")) is not None:
        found.append(TestpmdBuild("22.11", (system,)))
    return found


def newest() -> TestpmdBuild | None:
    b = builds()
    return b[0] if b else None


def start(
    build: TestpmdBuild,
    mounts: Sequence[Mount],
    eal: Sequence[str],
    app: Sequence[str],
    log: Path,
) -> subprocess.Popen[bytes]:
    """testpmd in a private mount namespace with ``mounts`` applied over a fresh /run (EAL args as the
    pod gets them, then ``--no-huge --no-pci``: no hugepages or devices on these machines)."""
    script = ["mount -t tmpfs vfh-run /run"]
    for i, _ in enumerate(mounts):
        script.append(f'mkdir -p "${{{2 * i + 2}}}" && mount --bind "${{{2 * i + 1}}}" "${{{2 * i + 2}}}"')
    n = 2 * len(mounts)
    script.append(f'shift {n} && exec "$@"')
    argv = [
        "unshare",
        "--mount",
        "--propagation",
        "private",
        "sh",
        "-ec",
        "; ".join(script),
        "sh",
        *[x for m in mounts for x in (m.source, m.destination)],
        *build.command,
        "--no-huge",
        "-m",
        "256",
        "--no-pci",
        *eal,
        "--",
        *app,
    ]
    with log.open("wb") as out:
        # Without -i, testpmd forwards until its stdin has a line or EOF: keep a pipe open.
        return subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.PIPE)


def start_io_forwarding(build: TestpmdBuild, env: DpdkPodEnv, log: Path) -> subprocess.Popen[bytes]:
    """A healthy DPDK app: io forwarding between two null ports with lcore cycles recorded, given only the
    pod's runtime folder (--no-huge: no hugepage mount, and /dev stays the host's). Returns once the
    telemetry socket, in that folder since EAL sees it as /var/run/dpdk, answers."""
    proc = start(
        build,
        env.mounts[:1],
        ["-l", "0-1", *env.eal_args, "--vdev=net_null0", "--vdev=net_null1"],
        ["--auto-start", "--forward-mode=io", "--total-num-mbufs=16384", "--record-core-cycles"],
        log,
    )
    try:
        wait_telemetry(env.telemetry_socket, proc, log)
    except BaseException:
        stop(proc)
        raise
    return proc


def wait_telemetry(
    socket_path: Path, proc: subprocess.Popen[bytes], log: Path, timeout: float = 20
) -> DpdkSample:
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            raise AssertionError(f"testpmd exited {proc.returncode}:\n{log.read_text()[-3000:]}")
        tel = Telemetry(socket_path)
        try:
            sample = read_sample(tel)
            if sample.mempools:
                return sample
        except TelemetryUnavailable:
            if time.monotonic() > deadline:
                raise
        finally:
            tel.close()
        time.sleep(0.1)


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.stdin is not None:
        proc.stdin.close()
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
