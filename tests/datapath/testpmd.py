"""Running Debian's real dpdk-testpmd the way a pod would: in its own mount namespace where the pod's
mounts (runtime folder as /var/run/dpdk, memif socket folder) are bind-mounted over a private /run.

Builds: bookworm's 22.11 (``/usr/bin/dpdk-testpmd``) and trixie's 24.11 under build/dpdk/trixie, run
through trixie's own loader (testbed/dpdk/setup.sh installs both).
"""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from vm_side.dpdk_env import DpdkPodEnv
from vm_side.dpdk_health import DpdkSample, Telemetry, TelemetryUnavailable, read_sample
from vm_side.runtime_model import Mount
from vm_side.vpp_pod import MemifWiring

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


@contextmanager
def memif_pair(
    build: TestpmdBuild, side: DpdkPodEnv, pod: DpdkPodEnv, wiring: MemifWiring, logs: Path
) -> Iterator[None]:
    """VPP's role played by a testpmd memif server (rxonly) on the host path of the pod's socket, and the
    pod's testpmd (txonly) given only what the pod gets: its mounts and the vdevs from its env. Both answer
    telemetry inside the block; both are stopped after it."""
    env = dict(wiring.env)
    host_socket = Path(wiring.mounts[0].source) / Path(env["VFHOTPLUG_MEMIF_SOCKET"]).name
    host_socket.parent.mkdir(parents=True, exist_ok=True)
    server = start(
        build,
        side.mounts[:1],
        ["-l", "0,1", "--main-lcore", "0", *side.eal_args,
         f"--vdev=net_memif0,role=server,id=0,socket={host_socket},socket-abstract=no"],
        ["--auto-start", "--forward-mode=rxonly", "--total-num-mbufs=16384"],
        logs / "server.log",
    )  # fmt: skip
    client = None
    try:
        wait_telemetry(side.telemetry_socket, server, logs / "server.log")
        client = start(
            build,
            (*pod.mounts[:1], *wiring.mounts),
            ["-l", "1,0", "--main-lcore", "1", *pod.eal_args,
             *(f"--vdev={v}" for v in env["VFHOTPLUG_MEMIF_DPDK_VDEVS"].split())],
            ["--auto-start", "--forward-mode=txonly", "--txpkts=64", "--total-num-mbufs=16384"],
            logs / "client.log",
        )  # fmt: skip
        wait_telemetry(pod.telemetry_socket, client, logs / "client.log")
        yield
    finally:
        if client is not None:
            stop(client)
        stop(server)


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
