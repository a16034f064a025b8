"""The gRPC face of the engine: TCP with mTLS for VMs, a root-only unix socket for the admin.

The caller's VM comes from its client certificate's common name, never from a request field. Errors are
mapped to gRPC status codes here and nowhere else.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Mapping
from concurrent import futures
from pathlib import Path
from typing import NoReturn, TypeVar, cast

import grpc

from contract.errors import ConfigError, HostSideError, PermissionDenied
from host_side.api import hostplug_pb2 as _pb
from host_side.api import hostplug_pb2_grpc as _grpc
from host_side.api.lease_state import reported
from host_side.api.wire import granted_to_pb, request_from_pb
from host_side.config import HostConfig, VmConfig
from host_side.engine import Engine
from host_side.leases import Lease
from host_side.metrics import Metrics

log = logging.getLogger(__name__)
_T = TypeVar("_T")

# A call without a gRPC deadline and without deadline_s still ends: long enough for a cold attach.
_DEFAULT_BUDGET_S = 120.0


# Here, not in host_side.api.wire: the client side of the API must not import the lease database.
def lease_to_pb(le: Lease) -> _pb.Lease:
    m = _pb.Lease(
        lease_id=le.lease_id,
        state=reported(le.state, le.pod_uid),
        vm=le.vm,
        pool=le.pool,
        pf=le.vf.pf,
        vf_index=le.vf.index,
        host_pci=str(le.vf.pci),
        guest_pci=str(le.guest_pci) if le.guest_pci else "",
        pod_uid=le.pod_uid or "",
        pod_name=le.pod_name or "",
        mac=le.desired.mac,
        vlan=le.desired.vlan,
        since=le.since,
        reason=le.reason or "",
    )
    if le.numa is not None:
        m.numa = le.numa
    return m


def status_of(err: BaseException) -> tuple[grpc.StatusCode, str]:
    """The one mapping from our errors to gRPC status and message; anything else is INTERNAL."""
    if isinstance(err, HostSideError):
        return grpc.StatusCode[err.kind.value], str(err)
    return grpc.StatusCode.INTERNAL, "internal error in the host service; its log has the details"


class Servicer(_grpc.HostPlugServicer):
    """One instance per listener: `admin` is True only for the unix socket."""

    def __init__(self, engine: Engine, metrics: Metrics, *, admin: bool, backend: str) -> None:
        self._engine = engine
        self._metrics = metrics
        self._admin = admin
        self._backend = backend

    def _vm(self, context: grpc.ServicerContext) -> VmConfig | None:
        """The calling VM from the certificate; None for the admin socket."""
        if self._admin:
            return None
        # The stubs type values as bytes; grpc gives a list of bytes per key.
        auth = cast(Mapping[str, list[bytes]], context.auth_context())
        names = auth.get("x509_common_name") or []
        if len(names) != 1:
            raise PermissionDenied("no client certificate common name; connect with the VM's certificate")
        return self._engine.vm(names[0].decode())

    def _need_vm(self, context: grpc.ServicerContext, method: str) -> VmConfig:
        vm = self._vm(context)
        if vm is None:
            raise PermissionDenied(f"{method} is a VM call; the admin socket cannot make it")
        return vm

    def _call(self, method: str, context: grpc.ServicerContext, body: Callable[[], _T]) -> _T:
        t0 = time.monotonic()
        try:
            return body()
        except Exception as e:  # the one boundary: every error becomes a gRPC status
            code, msg = status_of(e)
            if code == grpc.StatusCode.INTERNAL:
                log.exception("%s failed", method)
            else:
                log.info("%s refused (%s): %s", method, code.name, msg)
            self._metrics.error(method, code.name)
            self._abort(context, code, msg)
        finally:
            self._metrics.call(method, time.monotonic() - t0)

    @staticmethod
    def _abort(context: grpc.ServicerContext, code: grpc.StatusCode, msg: str) -> NoReturn:
        context.abort(code, msg)
        raise AssertionError("unreachable: abort raises")

    @staticmethod
    def _deadline(context: grpc.ServicerContext, budget_s: float = 0.0) -> float:
        left = context.time_remaining()
        limits = [
            _DEFAULT_BUDGET_S,
            *([left] if left is not None else []),
            *([budget_s] if budget_s > 0 else []),
        ]
        return time.monotonic() + min(limits)

    def _attach(
        self, request: _pb.AttachRequest, context: grpc.ServicerContext, warm_only: bool
    ) -> _pb.AttachReply:
        method = "Claim" if warm_only else "Attach"

        def body() -> _pb.AttachReply:
            vm = self._need_vm(context, method)
            vfs = self._engine.attach(
                vm,
                request.pod_uid,
                request.pod_name,
                [request_from_pb(r) for r in request.requests],
                request.request_id,
                self._deadline(context, request.deadline_s),
                warm_only=warm_only,
            )
            return _pb.AttachReply(vfs=[granted_to_pb(v) for v in vfs])

        return self._call(method, context, body)

    def Attach(self, request: _pb.AttachRequest, context: grpc.ServicerContext) -> _pb.AttachReply:
        return self._attach(request, context, warm_only=False)

    def Claim(self, request: _pb.AttachRequest, context: grpc.ServicerContext) -> _pb.AttachReply:
        return self._attach(request, context, warm_only=True)

    def Release(self, request: _pb.ReleaseRequest, context: grpc.ServicerContext) -> _pb.ReleaseReply:
        def body() -> _pb.ReleaseReply:
            vm = self._vm(context)
            if vm is not None and request.vm and request.vm != vm.identity:
                raise PermissionDenied(f"VM {vm.identity} cannot release for VM {request.vm}")
            result = self._engine.release(
                vm,
                request.pod_uid or None,
                list(request.lease_ids),
                request.request_id,
                self._deadline(context),
                admin_vm=request.vm or None,
            )
            return _pb.ReleaseReply(released=result.released, quarantined=result.quarantined)

        return self._call("Release", context, body)

    def Sync(self, request: _pb.SyncRequest, context: grpc.ServicerContext) -> _pb.SyncReply:
        def body() -> _pb.SyncReply:
            vm = self._need_vm(context, "Sync")
            result = self._engine.sync(vm, list(request.live_pod_uids), self._deadline(context))
            return _pb.SyncReply(released=result.released, quarantined=result.quarantined)

        return self._call("Sync", context, body)

    def List(self, request: _pb.ListRequest, context: grpc.ServicerContext) -> _pb.ListReply:
        return self._call(
            "List",
            context,
            lambda: _pb.ListReply(leases=[lease_to_pb(le) for le in self._engine.leases(self._vm(context))]),
        )

    def Health(self, request: _pb.HealthRequest, context: grpc.ServicerContext) -> _pb.HealthReply:
        def body() -> _pb.HealthReply:
            vm = self._vm(context)
            pools = [
                _pb.PoolCount(pool=pool, state=state, count=n)
                for (pool, state), n in sorted(self._engine.counts().items())
                if vm is None or pool in vm.pools
            ]
            return _pb.HealthReply(
                serving=True, backend=self._backend, identity=vm.identity if vm else "admin", pools=pools
            )

        return self._call("Health", context, body)


def _read(path: Path | None, what: str) -> bytes:
    if path is None:
        raise ConfigError(f"listen.{what} is not set")
    try:
        return path.read_bytes()
    except OSError as e:
        raise ConfigError(f"cannot read listen.{what} {path}: {e.strerror}") from e


class HostServer:
    """The TCP (mTLS) and admin (unix socket) listeners around one engine."""

    def __init__(self, engine: Engine, cfg: HostConfig, metrics: Metrics, *, workers: int = 16) -> None:
        self._servers: list[grpc.Server] = []
        self._engine, self._cfg, self._metrics, self._workers = engine, cfg, metrics, workers
        self.tcp_port: int | None = None

    def _server(self, admin: bool, bind: Callable[[grpc.Server], int]) -> int:
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=self._workers))
        servicer = Servicer(self._engine, self._metrics, admin=admin, backend=self._cfg.backend)
        _grpc.add_HostPlugServicer_to_server(servicer, server)  # type: ignore[no-untyped-call]
        what = "the admin socket" if admin else "TCP"
        try:
            port = bind(server)
        except RuntimeError as e:  # grpc's way of saying the bind failed
            raise ConfigError(f"cannot listen on {what}: {e}; check [listen] in the config") from e
        if port == 0:
            raise ConfigError(f"cannot listen on {what}: address in use; check [listen] in the config")
        server.start()
        self._servers.append(server)
        return port

    def start(self) -> None:
        listen = self._cfg.listen
        if listen.tcp is not None:
            creds = grpc.ssl_server_credentials(
                [(_read(listen.key, "key"), _read(listen.cert, "cert"))],
                root_certificates=_read(listen.ca, "ca"),
                require_client_auth=True,
            )
            tcp = listen.tcp
            self.tcp_port = self._server(False, lambda s: s.add_secure_port(tcp, creds))
            log.info("listening on %s (mTLS), port %d", tcp, self.tcp_port)
        sock = listen.admin_socket
        # Root-only: the folder is 0700 when we make it, the socket 0600; a stale socket is replaced.
        sock.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        sock.unlink(missing_ok=True)
        old = os.umask(0o177)
        try:
            self._server(
                True,
                lambda s: s.add_secure_port(
                    f"unix:{sock}", grpc.local_server_credentials(grpc.LocalConnectionType.UDS)
                ),
            )
        finally:
            os.umask(old)
        os.chmod(sock, 0o600)
        log.info("admin socket %s", sock)

    def stop(self, grace_s: float = 5.0) -> None:
        for s in self._servers:
            s.stop(grace_s).wait()
        self._servers.clear()
