"""The client of the host service: what the VM side (`HostApi`) and the admin CLI call.

gRPC failures become `HostCallError(code_name, message)`; callers never see generated classes.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar, cast

import grpc

from contract.errors import ErrorKind
from contract.host_api import GrantedVf, HostCallError, VfRequest
from host_side.api import hostplug_pb2 as _pb
from host_side.api import hostplug_pb2_grpc as _grpc
from host_side.api.certs import CertFacts, expiry_message, facts, now_utc, stamp
from host_side.api.wire import LeaseInfo, granted_from_pb, lease_from_pb, request_to_pb

log = logging.getLogger(__name__)
_T = TypeVar("_T")
# Set by the host on a refusal for rate (host_side.server.RETRY_AFTER_KEY; the client must not import it).
_RETRY_AFTER_KEY = "retry-after-ms"


@dataclass(frozen=True)
class Health:
    serving: bool
    backend: str
    identity: str  # the VM the host took the caller for ("admin" on the admin socket)
    vfs: dict[tuple[str, str], int]  # (pool, state) -> count


@dataclass(frozen=True)
class Released:
    released: tuple[str, ...]
    quarantined: tuple[str, ...]  # the guest did not let go in time; the host keeps them out of use


def _read(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as e:
        raise HostCallError(
            ErrorKind.INVALID_ARGUMENT, f"cannot read the {what} file {path}: {e.strerror}"
        ) from e


def _retry_after_s(call: grpc.Call) -> float | None:
    for key, value in call.trailing_metadata() or ():
        if key == _RETRY_AFTER_KEY:
            try:
                return max(0.0, int(value) / 1000)
            except (TypeError, ValueError):
                return None
    return None


def _own_cert(pem: bytes, path: Path) -> CertFacts:
    try:
        f = facts(pem)
    except ValueError as e:
        raise HostCallError(ErrorKind.INVALID_ARGUMENT, f"{path} is not a PEM certificate ({e})") from e
    _check_expiry(f, path)
    return f


def _check_expiry(f: CertFacts, path: Path) -> None:
    if f.expired(now_utc()):
        # The host's TLS layer refuses it before its code runs and tells us only "handshake failed".
        raise HostCallError(ErrorKind.FAILED_PRECONDITION, f"{expiry_message(f, 'this VM')} ({path})")


class HostClient:
    """A channel to the host service. Use as a context manager or call close().

    Over TCP the CA, certificate and key files are looked at before each call: when they changed, the
    next call goes over a new channel with them (a bad new set is logged and the old one kept)."""

    def __init__(
        self, target: str, *, ca: Path, cert: Path, key: Path, server_name: str | None = None
    ) -> None:
        self._target, self._server_name = target, server_name
        self._paths: tuple[Path, Path, Path] | None = (ca, cert, key)
        self._stamp = stamp(self._paths)
        self._lock = threading.Lock()
        self._retired: grpc.Channel | None = None  # the channel before a reload, closed at the next one
        self._init(self._tls_channel())

    def _tls_channel(self) -> grpc.Channel:
        assert self._paths is not None
        ca, cert, key = self._paths
        cert_pem = _read(cert, "client certificate")
        self._cert = _own_cert(cert_pem, cert)
        creds = grpc.ssl_channel_credentials(
            root_certificates=_read(ca, "CA"),
            private_key=_read(key, "client key"),
            certificate_chain=cert_pem,
        )
        # gRPC's default reconnect backoff grows to 2 minutes: a host restart would fail every pod start
        # for that long. The VM side asks often and cheaply, so retry the connection within a second.
        options: list[tuple[str, str | int]] = [
            ("grpc.initial_reconnect_backoff_ms", 100),
            ("grpc.max_reconnect_backoff_ms", 1000),
        ]
        if self._server_name:
            options.append(("grpc.ssl_target_name_override", self._server_name))
        return grpc.secure_channel(self._target, creds, options=options)

    def _init(self, channel: grpc.Channel) -> None:
        self._channel = channel
        self._stub = _grpc.HostPlugStub(channel)  # type: ignore[no-untyped-call]

    @classmethod
    def unix(cls, path: Path) -> HostClient:
        """The admin socket: local credentials over a unix socket (root only, by the socket's mode)."""
        self = cls.__new__(cls)
        self._paths, self._lock, self._retired = None, threading.Lock(), None
        self._init(
            grpc.secure_channel(f"unix:{path}", grpc.local_channel_credentials(grpc.LocalConnectionType.UDS))
        )
        return self

    def close(self) -> None:
        self._channel.close()
        if self._retired is not None:
            self._retired.close()

    def _fresh(self) -> None:
        """Picks up changed TLS files; refuses a call with this VM's own certificate expired."""
        if self._paths is None:
            return
        with self._lock:
            now = stamp(self._paths)
            if now != self._stamp:
                self._stamp = now
                old, cert = self._channel, self._cert
                try:
                    channel = self._tls_channel()
                except HostCallError as e:
                    self._cert = cert
                    log.error("client certificate reload refused, the old one stays in use: %s", e.detail)
                else:
                    if self._retired is not None:
                        self._retired.close()
                    self._retired = old
                    self._init(channel)
                    log.info("client certificate reloaded: %s", self._cert.named())
            if self._cert.expired(now_utc()):
                raise HostCallError(
                    ErrorKind.FAILED_PRECONDITION,
                    f"{expiry_message(self._cert, 'this VM')} ({self._paths[1]})",
                )

    def __enter__(self) -> HostClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _call(self, fn: Callable[[], _T]) -> _T:
        self._fresh()
        try:
            return fn()
        except grpc.RpcError as e:
            # Errors raised by unary calls are grpc.Call objects too (code, details); the stubs miss that.
            call = cast(grpc.Call, e)
            raise HostCallError(
                ErrorKind.named(call.code().name), call.details() or call.code().name, _retry_after_s(call)
            ) from e

    def _attach(
        self,
        rpc: str,
        pod_uid: str,
        pod_name: str,
        requests: Sequence[VfRequest],
        request_id: str,
        timeout_s: float,
    ) -> list[GrantedVf]:
        msg = _pb.AttachRequest(
            pod_uid=pod_uid,
            pod_name=pod_name,
            requests=[request_to_pb(r) for r in requests],
            request_id=request_id,
            deadline_s=timeout_s,
        )
        reply = self._call(lambda: cast(_pb.AttachReply, getattr(self._stub, rpc)(msg, timeout=timeout_s)))
        return [granted_from_pb(v) for v in reply.vfs]

    def attach(
        self, pod_uid: str, pod_name: str, requests: Sequence[VfRequest], request_id: str, timeout_s: float
    ) -> list[GrantedVf]:
        return self._attach("Attach", pod_uid, pod_name, requests, request_id, timeout_s)

    def claim(
        self, pod_uid: str, pod_name: str, requests: Sequence[VfRequest], request_id: str, timeout_s: float
    ) -> list[GrantedVf]:
        """From warm spares only; RESOURCE_EXHAUSTED when there are not enough."""
        return self._attach("Claim", pod_uid, pod_name, requests, request_id, timeout_s)

    def release(self, pod_uid: str, request_id: str, timeout_s: float) -> None:
        self.release_pod(pod_uid, request_id, timeout_s)

    def release_pod(self, pod_uid: str, request_id: str, timeout_s: float, *, vm: str = "") -> Released:
        """Like release(), with the outcome; `vm` only on the admin socket."""
        msg = _pb.ReleaseRequest(pod_uid=pod_uid, request_id=request_id, vm=vm)
        reply = self._call(lambda: self._stub.Release(msg, timeout=timeout_s))
        return Released(tuple(reply.released), tuple(reply.quarantined))

    def release_leases(self, lease_ids: Sequence[str], request_id: str, timeout_s: float) -> Released:
        msg = _pb.ReleaseRequest(lease_ids=list(lease_ids), request_id=request_id)
        reply = self._call(lambda: self._stub.Release(msg, timeout=timeout_s))
        return Released(tuple(reply.released), tuple(reply.quarantined))

    def sync(self, live_pod_uids: Sequence[str], timeout_s: float) -> None:
        msg = _pb.SyncRequest(live_pod_uids=list(live_pod_uids))
        self._call(lambda: self._stub.Sync(msg, timeout=timeout_s))

    def list_leases(self, timeout_s: float = 10.0) -> list[LeaseInfo]:
        reply = self._call(lambda: self._stub.List(_pb.ListRequest(), timeout=timeout_s))
        return [lease_from_pb(le) for le in reply.leases]

    def health(self, timeout_s: float = 10.0) -> Health:
        r = self._call(lambda: self._stub.Health(_pb.HealthRequest(), timeout=timeout_s))
        return Health(r.serving, r.backend, r.identity, {(p.pool, p.state): p.count for p in r.pools})
