"""`vfhotplug status | leases | release`: the admin's view of the host service over its unix socket;
`vfhotplug pods` runs the VM side's own view (vm_side.pods_cli) in its place."""

from __future__ import annotations

import argparse
import os
import secrets
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from contract.errors import ErrorKind
from contract.host_api import HostCallError
from host_side.api.client import HostClient
from host_side.api.lease_state import LeaseState

DEFAULT_SOCKET = "/run/vfhotplug/host.sock"


def _status(client: HostClient) -> int:
    h = client.health()
    print(f"serving: {h.serving}  backend: {h.backend}")
    pools = sorted({pool for pool, _ in h.vfs})
    states = tuple(LeaseState)
    print(f"{'pool':<16}" + "".join(f"{s:>12}" for s in states))
    for pool in pools:
        print(f"{pool:<16}" + "".join(f"{h.vfs.get((pool, s), 0):>12}" for s in states))
    return 0


def _leases(client: HostClient, vm: str | None) -> int:
    rows = [le for le in client.list_leases() if vm is None or le.vm == vm]
    head = (
        ("lease", 17),
        ("state", 11),
        ("vm", 12),
        ("pool", 10),
        ("host pci", 13),
        ("guest pci", 13),
        ("mac", 17),
    )
    print(" ".join(f"{name:<{width}}" for name, width in head) + " pod")
    for le in rows:
        age = time.time() - le.since
        pod = f"{le.pod_name or '-'} ({le.pod_uid})" if le.pod_uid else "-"
        print(
            f"{le.lease_id:<17} {le.state:<11} {le.vm:<12} {le.pool:<10} {le.host_pci:<13} "
            f"{le.guest_pci or '-':<13} {le.mac:<17} {pod}  {age:.0f}s{'  ' + le.reason if le.reason else ''}"
        )
    return 0


def _release(client: HostClient, args: argparse.Namespace) -> int:
    rid = f"admin-{secrets.token_hex(6)}"
    if args.lease:
        out = client.release_leases(args.lease, rid, args.timeout)
    else:
        out = client.release_pod(args.pod, rid, args.timeout, vm=args.vm)
    for lid in out.released:
        print(f"released {lid}")
    for lid in out.quarantined:
        print(f"quarantined {lid}: the guest still holds it; try again once the VM lets go")
    return 1 if out.quarantined else 0


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="vfhotplug", description=__doc__)
    p.add_argument("--socket", default=DEFAULT_SOCKET, help=f"admin socket (default {DEFAULT_SOCKET})")
    sub = p.add_subparsers(dest="cmd", required=True)
    sub.add_parser("status", help="VFs per pool and state")
    ls = sub.add_parser("leases", help="every lease")
    ls.add_argument("--vm", help="only this VM's leases")
    rel = sub.add_parser("release", help="release leases (also quarantined ones, once the guest let go)")
    which = rel.add_mutually_exclusive_group(required=True)
    which.add_argument("--lease", action="append", help="lease id (repeatable)")
    which.add_argument("--pod", help="pod uid (with --vm)")
    rel.add_argument("--vm", help="the VM of --pod")
    rel.add_argument("--timeout", type=float, default=30.0)
    sub.add_parser(
        "pods", help="in the VM: the plugin's pods, their VFs and data-path health", add_help=False
    )
    args, rest = p.parse_known_args(argv)
    if args.cmd == "pods":
        # One command for the admin, two owners: the VM's view is the VM side's own program, exec'd so the
        # host's CLI never imports VM code (nor vpp_papi, pyroute2).
        os.execv(sys.executable, [sys.executable, "-m", "vm_side.pods_cli", *rest])
    if rest:
        p.error(f"unrecognized arguments: {' '.join(rest)}")
    if args.cmd == "release" and args.pod and not args.vm:
        p.error("release --pod needs --vm")
    try:
        with HostClient.unix(Path(args.socket)) as client:
            if args.cmd == "status":
                return _status(client)
            if args.cmd == "leases":
                return _leases(client, args.vm)
            return _release(client, args)
    except HostCallError as e:
        hint = " (is vfhotplug-host running, and are you root?)" if e.code == ErrorKind.UNAVAILABLE else ""
        print(f"vfhotplug: {e}{hint}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
