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
from typing import NoReturn, TypeVar, cast

import grpc

from contract.errors import ConfigError, HostSideError, PermissionDenied
from host_side.api import hostplug_pb2 as _pb
from host_side.api import hostplug_pb2_grpc as _grpc
from host_side.api.certs import expiry_message, facts, now_utc
from host_side.api.lease_state import reported
from host_side.api.wire import granted_to_pb, request_from_pb
from host_side.config import HostConfig, VmConfig
from host_side.credentials import ServerTls
from host_side.engine import Engine
from host_side.leases import Lease
from host_side.metrics import Metrics
from host_side.rate_limit import RateLimiter

log = logging.getLogger(__name__)
_T = TypeVar("_T")

# A call without a gRPC deadline and without deadline_s still ends: long enough for a cold attach.
_DEFAULT_BUDGET_S = 120.0


# The trailing metadata key of a refusal for rate: how long the VM should wait before calling again.
RETRY_AFTER_KEY = "retry-after-ms"


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
    """One instance per listener: `tls` is the mTLS listener's live TLS set, None on the admin socket."""

    def __init__(
        self,
        engine: Engine,
        metrics: Metrics,
        *,
        backend: str,
        limiter: RateLimiter,
        tls: ServerTls | None,  # None: the admin socket
    ) -> None:
        self._engine = engine
        self._metrics = metrics
        self._admin = tls is None
        self._tls = tls
        self._backend = backend
        self._limiter = limiter

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

    def _peer_cert_ok(self, context: grpc.ServicerContext) -> None:
        """Revoked and (on a connection older than the certificate's end) expired certificates are refused."""
        if self._tls is None:
            return
        pems = cast(Mapping[str, list[bytes]], context.auth_context()).get("x509_pem_cert") or []
        if len(pems) != 1:
            raise PermissionDenied("no client certificate; connect with the VM's certificate")
        f = facts(pems[0])
        if self._tls.revoked(f.serial):
            raise PermissionDenied(
                f"client certificate {f.named()} is revoked (listen.crl); issue the VM a new certificate"
            )
        if f.expired(now_utc()):
            raise PermissionDenied(expiry_message(f, "client"))

    def _over_rate(self, method: str, context: grpc.ServicerContext) -> None:
        """Refuses the call, with a retry hint, when the calling VM is over its rate; the admin is never."""
        if self._admin:
            return
        names = cast(Mapping[str, list[bytes]], context.auth_context()).get("x509_common_name") or []
        identity = names[0].decode() if len(names) == 1 else ""
        wait_s = self._limiter.wait_s(identity, time.monotonic())
        if wait_s <= 0:
            return
        ms = max(1, round(wait_s * 1000))
        msg = (
            f"{method}: VM {identity} is over its request rate ({self._limiter.rate_per_s:g}/s, burst "
            f"{self._limiter.burst}); retry in {ms} ms (other VMs are not affected)"
        )
        log.warning("%s refused (RESOURCE_EXHAUSTED): %s", method, msg)
        self._metrics.error(method, "RESOURCE_EXHAUSTED")
        context.set_trailing_metadata(((RETRY_AFTER_KEY, str(ms)),))
        self._abort(context, grpc.StatusCode.RESOURCE_EXHAUSTED, msg)

    def _call(self, method: str, context: grpc.ServicerContext, body: Callable[[], _T]) -> _T:
        t0 = time.monotonic()
        self._over_rate(method, context)
        try:
            self._peer_cert_ok(context)
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


class HostServer:
    """The TCP (mTLS) and admin (unix socket) listeners around one engine."""

    def __init__(self, engine: Engine, cfg: HostConfig, metrics: Metrics, *, workers: int = 16) -> None:
        self._servers: list[grpc.Server] = []
        self._engine, self._cfg, self._metrics, self._workers = engine, cfg, metrics, workers
        self.tcp_port: int | None = None
        self._limiter = RateLimiter(cfg.limits.rate_per_s, cfg.limits.burst)
        self.tls: ServerTls | None = None

    def _server(self, tls: ServerTls | None, bind: Callable[[grpc.Server], int]) -> int:
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=self._workers))
        servicer = Servicer(
            self._engine, self._metrics, backend=self._cfg.backend, limiter=self._limiter, tls=tls
        )
        _grpc.add_HostPlugServicer_to_server(servicer, server)  # type: ignore[no-untyped-call]
        what = "TCP" if tls else "the admin socket"
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
            try:
                tls = self.tls = ServerTls(listen)
            except ConfigError as e:
                raise ConfigError(f"{self._cfg.path}: {e}") from e
            creds = tls.credentials()
            tcp = listen.tcp
            self.tcp_port = self._server(tls, lambda s: s.add_secure_port(tcp, creds))
            log.info("listening on %s (mTLS), port %d", tcp, self.tcp_port)
        sock = listen.admin_socket
        # Root-only: the folder is 0700 when we make it, the socket 0600; a stale socket is replaced.
        sock.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        sock.unlink(missing_ok=True)
        old = os.umask(0o177)
        try:
            self._server(
                None,
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
