"""`vfhotplug-host serve --config F` runs the VF controller; `vfhotplug-host ca ...` makes a lab PKI."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from collections.abc import Callable, Sequence
from pathlib import Path

from contract.crash_points import CrashPoints
from contract.errors import HostSideError
from host_side import config
from host_side.backends import select as backends
from host_side.backends.base import Hotplug, VfNetlink
from host_side.engine import Engine
from host_side.inventory import SysfsInventory
from host_side.leases import LeaseStore
from host_side.metrics import Metrics
from host_side.server import HostServer

log = logging.getLogger("host_side")


def _loop(stop: threading.Event, every_s: float, what: str, step: Callable[[], object]) -> None:
    while not stop.wait(every_s):
        try:
            step()
        except HostSideError as e:
            log.warning("%s failed: %s", what, e)
        except Exception:  # a background loop must outlive one bad round; the error is logged in full
            log.exception("%s failed", what)


def serve(
    cfg: config.HostConfig, hotplug: Hotplug, netlink: VfNetlink, metrics: Metrics, stop: threading.Event
) -> None:
    """Runs the service with the given adapters until `stop` is set (SIGTERM/SIGINT in main)."""
    store = LeaseStore(cfg.state_dir / "leases.sqlite3", crash_points=CrashPoints.from_env())
    try:
        inventory = SysfsInventory(cfg.sysfs_root, list(cfg.pools.values()))
        engine = Engine(cfg, inventory, store, hotplug, netlink, observe=metrics.observe)
        metrics.watch_leases(store.counts)
        engine.reconcile(startup=True)
        server = HostServer(engine, cfg, metrics)
        server.start()
        if cfg.metrics_address:
            metrics.serve(cfg.metrics_address)
        engine.refill_warm()
        loops = [
            threading.Thread(
                target=_loop,
                args=(stop, cfg.timeouts.reconcile_interval_s, "reconcile", engine.reconcile),
                daemon=True,
            ),
            threading.Thread(
                target=_loop,
                args=(stop, cfg.timeouts.warm_refill_interval_s, "warm refill", engine.refill_warm),
                daemon=True,
            ),
        ]
        for t in loops:
            t.start()
        log.info(
            "vfhotplug-host serving (backend %s, %d VM(s), %d pool(s))",
            cfg.backend,
            len(cfg.vms),
            len(cfg.pools),
        )
        stop.wait()
        log.info("stopping")
        server.stop()
    finally:
        store.close()


def _serve_main(args: argparse.Namespace) -> int:
    cfg = config.load(Path(args.config))
    metrics = Metrics()
    hotplug, netlink = backends.build(cfg, metrics.observe)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    serve(cfg, hotplug, netlink, metrics, stop)
    return 0


def _ca_main(args: argparse.Namespace) -> int:
    from host_side import pki  # cryptography costs the serving process ~5 MB RSS it never uses

    folder = Path(args.dir)
    if args.ca_cmd == "init":
        out = pki.init_ca(folder)
    elif args.server:
        out = pki.issue(folder, args.server, server=True, sans=args.san or [args.server])
    else:
        out = pki.issue(folder, args.vm)
    print(f"wrote {out.cert} and {out.key}")
    return 0


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="vfhotplug-host", description=__doc__)
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("serve", help="run the VF controller")
    s.add_argument("--config", required=True, help="host TOML config (see config/host.example.toml)")
    s.add_argument("--log-level", default="INFO")
    ca = sub.add_parser("ca", help="lab certificate authority")
    ca_sub = ca.add_subparsers(dest="ca_cmd", required=True)
    init = ca_sub.add_parser("init", help="create ca.pem/ca.key")
    init.add_argument("--dir", required=True)
    issue = ca_sub.add_parser("issue", help="issue a VM client certificate or the host's server certificate")
    issue.add_argument("--dir", required=True)
    who = issue.add_mutually_exclusive_group(required=True)
    who.add_argument("--vm", help="VM identity (the [vms.<identity>] key of the host config)")
    who.add_argument("--server", help="server certificate name, e.g. the host name")
    issue.add_argument("--san", action="append", help="DNS name or IP the VMs connect to (repeatable)")
    for sp in (init, issue):
        sp.add_argument("--log-level", default="WARNING")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        return _serve_main(args) if args.cmd == "serve" else _ca_main(args)
    except HostSideError as e:
        print(f"vfhotplug-host: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
