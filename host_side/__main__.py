"""`vfhotplug-host serve --config F` runs the VF controller; `vfhotplug-host ca ...` makes a lab PKI."""

from __future__ import annotations

import argparse
import logging
import signal
import sqlite3
import sys
import threading
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path

from contract.crash_points import CrashPoints
from contract.errors import ConfigError, HostSideError
from host_side import config
from host_side.api.certs import stamp
from host_side.backends import select as backends
from host_side.backends.base import DomainEventSource, Hotplug, VfNetlink
from host_side.credentials import ServerTls
from host_side.engine import Engine
from host_side.inventory import SysfsInventory
from host_side.leases import LeaseStore
from host_side.metrics import Metrics
from host_side.server import HostServer
from host_side.vm_watch import VmWatch

log = logging.getLogger("host_side")
_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")


def _loop(stop: threading.Event, every_s: float, what: str, step: Callable[[], object]) -> None:
    while not stop.wait(every_s):
        try:
            step()
        except HostSideError as e:
            log.warning("%s failed: %s", what, e)
        except Exception:  # a background loop must outlive one bad round; the error is logged in full
            log.exception("%s failed", what)


# How often the TLS files and the config are looked at between SIGHUPs; handshakes and calls look too.
_TLS_POLL_S = 1.0


def install_signals(stop: threading.Event, reload: threading.Event) -> None:
    """SIGTERM/SIGINT stop the service; SIGHUP reloads its certificates, CA bundle and CRL."""
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    signal.signal(signal.SIGHUP, lambda *_: reload.set())


def _reload_vms(cfg: config.HostConfig, engine: Engine) -> config.HostConfig:
    """The config file again: its [vms] table (the identity map) is taken, other changes need a restart."""
    try:
        new = config.load(cfg.path)
    except ConfigError as e:
        log.error("config reload refused, the old VM identity map stays in use: %s", e)
        return cfg
    if replace(new, vms=cfg.vms) != cfg:
        log.warning("%s: changes outside [vms] take effect at the next restart", cfg.path)
    if new.vms != cfg.vms:
        engine.replace_vms(new.vms)
        log.info("VM identity map reloaded: %s", ", ".join(sorted(new.vms)) or "no VMs")
    return replace(cfg, vms=new.vms)


def _watch(
    stop: threading.Event,
    reload: threading.Event,
    tls: ServerTls | None,
    cfg: config.HostConfig,
    engine: Engine,
) -> None:
    """SIGHUP or a changed file reloads the TLS files and the VM identity map."""
    seen = stamp((cfg.path,))
    while not stop.is_set():
        forced = reload.wait(_TLS_POLL_S)
        reload.clear()
        if forced:
            log.info("SIGHUP: reloading the TLS files and the VM identity map")
        if tls is not None:
            tls.refresh(force=forced)
        now = stamp((cfg.path,))
        if forced or now != seen:
            seen = now
            cfg = _reload_vms(cfg, engine)


def serve(
    cfg: config.HostConfig,
    hotplug: Hotplug,
    netlink: VfNetlink,
    metrics: Metrics,
    stop: threading.Event,
    reload: threading.Event | None = None,
) -> None:
    """Runs the service with the given adapters until `stop` is set (SIGTERM/SIGINT in main); `reload`
    set (SIGHUP) reloads the TLS files at once, which are otherwise watched for changes."""
    try:
        store = LeaseStore(cfg.state_dir / "leases.sqlite3", crash_points=CrashPoints.from_env())
    except (OSError, sqlite3.Error) as e:
        raise ConfigError(
            f"{cfg.path}: state_dir: cannot open the lease database in {cfg.state_dir}: {e}; "
            "point it at a writable folder"
        ) from e
    try:
        inventory = SysfsInventory(cfg.sysfs_root, list(cfg.pools.values()))
        engine = Engine(cfg, inventory, store, hotplug, netlink, observe=metrics.observe)
        metrics.watch_leases(store.counts)
        vm_watch = VmWatch(cfg, engine)
        if isinstance(hotplug, DomainEventSource):
            # Before the start-up reconcile, so nothing that happens after it goes unseen.
            hotplug.watch_domains(vm_watch.on_event)
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
        watch = (stop, reload or threading.Event(), server.tls, cfg, engine)
        loops.append(threading.Thread(target=_watch, args=watch, daemon=True))
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
        vm_watch.close()
    finally:
        store.close()


def _serve_main(args: argparse.Namespace) -> int:
    cfg = config.load(Path(args.config))
    metrics = Metrics()
    hotplug, netlink = backends.build(cfg, metrics.observe)
    stop, reload = threading.Event(), threading.Event()
    install_signals(stop, reload)
    serve(cfg, hotplug, netlink, metrics, stop, reload)
    return 0


def _ca_main(args: argparse.Namespace) -> int:
    from host_side import pki  # cryptography costs the serving process ~5 MB RSS it never uses

    folder = Path(args.dir)
    if args.ca_cmd == "init":
        out = pki.init_ca(folder)
    elif args.ca_cmd == "revoke":
        print(f"revoked {args.vm}: wrote {pki.revoke(folder, args.vm)}")
        return 0
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
    s.add_argument("--log-level", default="INFO", type=str.upper, choices=_LEVELS)
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
    revoke = ca_sub.add_parser("revoke", help="add a VM's certificate to the CA's CRL (crl.pem)")
    revoke.add_argument("--dir", required=True)
    revoke.add_argument("--vm", required=True, help="the VM whose <vm>.pem is revoked")
    for sp in (init, issue, revoke):
        sp.add_argument("--log-level", default="WARNING", type=str.upper, choices=_LEVELS)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(
        level=args.log_level,
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
