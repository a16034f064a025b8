"""The real host service process over fake libvirt and netlink whose state lives in files.

`python -m tests.host.fake_service --config F --fake-state DIR`: what the crash tests kill -9 and
restart, and what the benchmark measures. The fakes' files survive the process like libvirt would.
"""

from __future__ import annotations

import argparse
import logging
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

from contract.host_api import HostCallError
from host_side import config
from host_side.__main__ import install_signals, serve
from host_side.api.client import HostClient
from host_side.metrics import Metrics
from tests.host.fakes import FakeDomain, FakeHotplug, FakeVfNetlink


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="fake_service")
    p.add_argument("--config", required=True)
    p.add_argument("--fake-state", required=True)
    p.add_argument("--in-memory", action="store_true", help="fakes keep no files (the benchmark)")
    p.add_argument("--log-level", default="WARNING")
    args = p.parse_args(argv)
    logging.basicConfig(level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    cfg = config.load(Path(args.config))
    state = Path(args.fake_state)
    state.mkdir(parents=True, exist_ok=True)
    # Their files are what a kill -9 leaves of libvirt's and the kernel's state (the crash tests).
    files = not args.in_memory
    hotplug = FakeHotplug(
        {vm.domain: FakeDomain() for vm in cfg.vms.values()}, state=state / "libvirt.json" if files else None
    )
    netlink = FakeVfNetlink(state=state / "netlink.json" if files else None)
    stop, reload = threading.Event(), threading.Event()
    install_signals(stop, reload)
    serve(cfg, hotplug, netlink, Metrics(), stop, reload)
    return 0


if __name__ == "__main__":
    sys.exit(main())


REPO = Path(__file__).resolve().parents[2]


def launch(
    cfg_path: Path, fake_state: Path, *, env: dict[str, str] | None = None, in_memory: bool = False
) -> subprocess.Popen[bytes]:
    """Starts the service process and returns once its admin socket answers Health. `in_memory`: the fakes
    write no state files, so a benchmark measures the service, not the fakes' file renames."""
    cfg = config.load(cfg_path)
    fake_state.mkdir(parents=True, exist_ok=True)
    args = [
        "--config",
        str(cfg_path),
        "--fake-state",
        str(fake_state),
        *(["--in-memory"] if in_memory else []),
    ]
    with (fake_state / "service.log").open("ab") as log_file:
        proc = subprocess.Popen(
            [sys.executable, "-m", "tests.host.fake_service", *args],
            cwd=REPO,
            env={**os.environ, **(env or {})},
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"service exited with {proc.returncode}; see {fake_state / 'service.log'}")
        if cfg.listen.admin_socket.exists():
            try:
                with HostClient.unix(cfg.listen.admin_socket) as admin:
                    admin.health(timeout_s=1)
                return proc
            except HostCallError:
                pass
        time.sleep(0.05)
    proc.kill()
    raise RuntimeError(f"service did not answer within 30 s; see {fake_state / 'service.log'}")
