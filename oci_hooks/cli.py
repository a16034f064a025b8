"""The full `vfhotplug-hook` command line (`__main__` keeps the no-VF fast path in front of it).

    vfhotplug-hook prepare [--id ID] BUNDLE   edit BUNDLE/config.json before `runc create`
    vfhotplug-hook precreate                  podman: runtime config on stdin, the config to use on stdout
    vfhotplug-hook createRuntime | poststop   OCI state on stdin
    vfhotplug-hook auto                       any of the three above, told apart by what stdin holds
    vfhotplug-hook cdi ID VFS                 dpdk VFs for ID as CDI devices; prints their names
    vfhotplug-hook release ID                 give back a container's VFs by hand
    vfhotplug-hook release-owed               retry host releases journaled while the host was away

Exit status: 0 done (or nothing to do), 1 the container's VFs could not be given or taken back (one line on
stderr says why; nothing stays allocated), 2 bad invocation or config. Logs go to --log-file, else syslog.
"""

from __future__ import annotations

import argparse
import json
import logging
import logging.handlers
import os
import shutil
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from oci_hooks.spec import (
    HookCommand,
    SpecError,
    Stage,
    annotations_of,
    parse_state,
    refuse_at_create,
    stage_of,
)
from oci_hooks.timing import Spans
from vm_side.annotations import ANNOTATION

if TYPE_CHECKING:
    from contract.host_api import GrantedVf, HostApi, VfRequest
    from oci_hooks.hooks import OciHooks
    from vm_side.config import HostEndpoint
    from vm_side.sysfs import GuestSysfs

log = logging.getLogger("oci_hooks")

CONFIG_ENV = "VFHOTPLUG_CONFIG"
LOG_ENV = "VFHOTPLUG_HOOK_LOG"
DEFAULT_CONFIG = "/etc/vfhotplug/nri.toml"  # the NRI plugin's: one config for both entries
EXIT_FAILED, EXIT_USAGE = 1, 2
NETNS_SUBDIR = "netns"  # of pods.state_dir: the network namespaces `prepare` pins for runc and crun
_SYSLOG = "/dev/log"

SysfsFactory = Callable[[Path], "GuestSysfs"]


class _Usage(Exception):
    pass


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="vfhotplug-hook", description="OCI hooks giving containers SR-IOV VFs")
    p.add_argument("--config", help=f"plugin TOML config (default: ${CONFIG_ENV}, else {DEFAULT_CONFIG})")
    p.add_argument(
        "--timeout",
        type=float,
        default=25.0,
        help="seconds this call may take (keep it under the runtime's hook timeout)",
    )
    p.add_argument("--log-file", help=f"append logs here (default: ${LOG_ENV}, else syslog)")
    p.add_argument("--log-level", choices=("DEBUG", "INFO", "WARNING", "ERROR"), help="default: the config's")
    sub = p.add_subparsers(dest="cmd", required=True)
    prep = sub.add_parser("prepare", help="give a bundle's container its VFs before `runc create`")
    prep.add_argument("bundle", type=Path)
    prep.add_argument("--id", help="the container id runc will be given (default: the bundle folder's name)")
    prep.add_argument("--hook-path", help="the executable the added hooks run (default: this one)")
    for stage in (*Stage, "auto"):
        sub.add_parser(str(stage), help=f"the {stage} hook (reads stdin)")
    cdi = sub.add_parser(
        "cdi", help="take dpdk VFs for ID and print their CDI device names (podman run --device NAME)"
    )
    cdi.add_argument("container_id", metavar="ID", help="names the VFs' owner; `release ID` gives them back")
    cdi.add_argument("vfs", metavar="VFS", help=f'what {ANNOTATION} would say, e.g. \'[{{"mode": "dpdk"}}]\'')
    rel = sub.add_parser("release", help="give back a container's VFs (what poststop does)")
    rel.add_argument("container_id")
    sub.add_parser("release-owed", help="retry host releases journaled while the host was unreachable")
    return p


def run(argv: Sequence[str], stdin_text: str | None, make_sysfs: SysfsFactory | None, started: float) -> int:
    """`stdin_text`: stdin when the fast path already read it. `make_sysfs`: see `__main__.main`.
    `started`: time.perf_counter() when `main` began, so the stage's time line covers the whole call."""
    args = _parser().parse_args(argv)
    args.stdin_text = stdin_text
    args.spans = Spans(started)
    _setup_logging(args.log_file or os.environ.get(LOG_ENV), args.log_level or "INFO")
    try:
        return _run(args, make_sysfs)
    except _Usage as e:
        return _fail(str(e), EXIT_USAGE)
    except SpecError as e:
        return _fail(str(e), EXIT_FAILED)
    except _failures() as e:
        from contract.errors import ConfigError

        return _fail(str(e), EXIT_USAGE if isinstance(e, ConfigError) else EXIT_FAILED)


def _run(args: argparse.Namespace, make_sysfs: SysfsFactory | None) -> int:
    cmd: str = args.cmd
    if cmd == "prepare":
        return _prepare(args, make_sysfs)
    if cmd == "release":
        _hooks(args, make_sysfs).release(args.container_id)
        return 0
    if cmd == "cdi":
        for name in _hooks(args, make_sysfs).prepare_cdi(args.container_id, args.vfs):
            print(name)
        return 0
    if cmd == "release-owed":
        left = _hooks(args, make_sysfs).release_owed()
        if left:
            return _fail(f"{left} host release(s) still owed; the host is not answering", EXIT_FAILED)
        return 0
    doc = _read_stdin(args.stdin_text)
    stage = stage_of(doc) if cmd == "auto" else Stage(cmd)
    if stage is Stage.PRECREATE:
        if not isinstance(doc, dict):
            raise SpecError(f"precreate: stdin holds JSON {type(doc).__name__}, not a runtime config")
        json.dump(_precreate(args, make_sysfs, doc), sys.stdout)
        if ANNOTATION in annotations_of(doc, "runtime config"):
            log.info("precreate took %s", args.spans.line())
        return 0
    state = parse_state(doc)
    if ANNOTATION not in state.annotations:
        return 0  # the common case stays cheap: no config, no imports of the core
    hooks = _hooks(args, make_sysfs)
    if stage is Stage.CREATE_RUNTIME:
        hooks.create_runtime(state)
    else:
        hooks.poststop(state)
    log.info("container %s: %s took %s", state.id, stage, args.spans.line())
    return 0


def _precreate(args: argparse.Namespace, make_sysfs: SysfsFactory | None, config: dict[str, Any]) -> Any:
    if ANNOTATION not in annotations_of(config, "runtime config"):
        return config
    try:
        return _hooks(args, make_sysfs).precreate(config)
    except _failures() as e:
        # podman hides this stage's stderr: fail the container at createRuntime instead, where it shows.
        line = f"vfhotplug: {e}"
        log.error("%s", line)
        return refuse_at_create(config, line)


def _prepare(args: argparse.Namespace, make_sysfs: SysfsFactory | None) -> int:
    bundle: Path = args.bundle.resolve()
    path = bundle / "config.json"
    try:
        config = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise _Usage(f"cannot read {path}: {e}; give the bundle folder of `runc create`") from e
    if not isinstance(config, dict):
        raise _Usage(f"{path} is not a JSON object")
    if ANNOTATION not in annotations_of(config, str(path)):
        log.info("bundle %s asks for no VFs; config.json left as it is", bundle)
        return 0
    cid = args.id or bundle.name
    hooks = _hooks(args, make_sysfs)
    out = hooks.prepare_bundle(cid, config, _self_command(args))
    assert out is not None  # the annotation is there
    from vm_side.record_store import write_atomic

    try:
        write_atomic(path, json.dumps(out, indent=2))
    except OSError as e:
        hooks.release(cid)
        raise _Usage(f"cannot write {path}: {e.strerror}; nothing stays allocated") from e
    log.info("container %s: bundle %s prepared; prepare took %s", cid, bundle, args.spans.line())
    return 0


def _self_command(args: argparse.Namespace) -> HookCommand:
    """The hooks `prepare` adds call this same executable with this same config and time limit."""
    exe = args.hook_path
    if exe is None:
        # `python -m oci_hooks` has no executable of its own: then the installed console script.
        exe = sys.argv[0] if os.access(sys.argv[0], os.X_OK) else shutil.which("vfhotplug-hook")
    if exe is None or not os.access(exe, os.X_OK):
        raise _Usage(f"hook executable {exe} is not executable; pass --hook-path")
    extra = ["--config", str(_config_path(args).resolve()), "--timeout", str(args.timeout)]
    if args.log_file:
        extra += ["--log-file", str(Path(args.log_file).resolve())]
    # runc kills a hook at its timeout: leave it a second beyond ours so our rollback can finish.
    return HookCommand(str(Path(exe).absolute()), tuple(extra), timeout_s=int(args.timeout) + 2)


def _config_path(args: argparse.Namespace) -> Path:
    return Path(args.config or os.environ.get(CONFIG_ENV) or DEFAULT_CONFIG)


def _hooks(args: argparse.Namespace, make_sysfs: SysfsFactory | None) -> OciHooks:
    """Builds the adapters and the lifecycle (imported here: a container without VFs never pays for it)."""
    spans: Spans = args.spans
    with spans.span("load (imports and config)"):
        from oci_hooks.hooks import OciHooks
        from oci_hooks.netns import NetnsPins
        from vm_side.assembly import build_lifecycle
        from vm_side.config import load

        cfg = load(_config_path(args))
        logging.getLogger().setLevel(args.log_level or cfg.log_level)
        sysfs = make_sysfs(cfg.sysfs_root) if make_sysfs is not None else None
        lifecycle = build_lifecycle(cfg, _LazyHost(cfg.host, spans), sysfs)
        return OciHooks(lifecycle, args.timeout, NetnsPins(cfg.state_dir / NETNS_SUBDIR))


class _LazyHost:
    """The host client, connected on first use: createRuntime, and poststop of a container already
    released, make no host call, and importing grpc is a large share of a hook's start-up."""

    def __init__(self, endpoint: HostEndpoint, spans: Spans) -> None:
        self._endpoint = endpoint
        self._spans = spans
        self._client: HostApi | None = None

    def _host(self) -> HostApi:
        if self._client is None:
            with self._spans.span("host connect (grpc import)"):
                self._client = self._endpoint.connect()
        return self._client

    def attach(
        self, pod_uid: str, pod_name: str, requests: Sequence[VfRequest], request_id: str, timeout_s: float
    ) -> list[GrantedVf]:
        host = self._host()
        with self._spans.span("host attach RPC"):
            return host.attach(pod_uid, pod_name, requests, request_id, timeout_s)

    def release(self, pod_uid: str, request_id: str, timeout_s: float) -> None:
        host = self._host()
        with self._spans.span("host release RPC"):
            host.release(pod_uid, request_id, timeout_s)

    def sync(self, live_pod_uids: Sequence[str], timeout_s: float) -> None:
        self._host().sync(live_pod_uids, timeout_s)


def _failures() -> tuple[type[BaseException], ...]:
    """The errors that end a hook with one line for the user (lazy: they live in the core's modules)."""
    from contract.errors import ConfigError
    from contract.host_api import HostCallError
    from oci_hooks.hooks import HookFailure
    from vm_side.lifecycle import PodError
    from vm_side.pod_record import RecordError

    return (HookFailure, PodError, HostCallError, ConfigError, RecordError)


def _read_stdin(text: str | None) -> Any:
    if text is None:
        text = sys.stdin.read()
    try:
        return json.loads(text)
    except ValueError as e:
        raise _Usage(f"stdin is not JSON ({e}); runtimes pass the OCI state or config there") from e


def _fail(message: str, code: int) -> int:
    log.error("%s", message)
    print(f"vfhotplug: {message}", file=sys.stderr)
    return code


def _setup_logging(log_file: str | None, level: str) -> None:
    root = logging.getLogger()
    root.setLevel(level)
    handler: logging.Handler
    if log_file:
        handler = logging.FileHandler(log_file)
        handler.setFormatter(logging.Formatter("%(asctime)s %(process)d %(name)s %(levelname)s %(message)s"))
    elif os.path.exists(_SYSLOG):
        handler = logging.handlers.SysLogHandler(_SYSLOG)
        handler.setFormatter(logging.Formatter("vfhotplug-hook[%(process)d]: %(name)s %(message)s"))
    else:
        handler = logging.NullHandler()  # stderr belongs to the one line runtimes show users
    root.addHandler(handler)
