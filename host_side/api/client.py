"""The client of the host service: what the VM side (`HostApi`) and the admin CLI call.

gRPC failures become `HostCallError(code_name, message)`; callers never see generated classes.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar, cast

import grpc

from contract.errors import ErrorKind
from contract.host_api import GrantedVf, HostCallError, VfRequest
from host_side.api import hostplug_pb2 as _pb
from host_side.api import hostplug_pb2_grpc as _grpc
from host_side.api.wire import LeaseInfo, granted_from_pb, lease_from_pb, request_to_pb

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


class HostClient:
    """A channel to the host service. Use as a context manager or call close()."""

    def __init__(
        self, target: str, *, ca: Path, cert: Path, key: Path, server_name: str | None = None
    ) -> None:
        creds = grpc.ssl_channel_credentials(
            root_certificates=_read(ca, "CA"),
            private_key=_read(key, "client key"),
            certificate_chain=_read(cert, "client certificate"),
        )
        # gRPC's default reconnect backoff grows to 2 minutes: a host restart would fail every pod start
        # for that long. The VM side asks often and cheaply, so retry the connection within a second.
        options: list[tuple[str, str | int]] = [
            ("grpc.initial_reconnect_backoff_ms", 100),
            ("grpc.max_reconnect_backoff_ms", 1000),
        ]
        if server_name:
            options.append(("grpc.ssl_target_name_override", server_name))
        self._init(grpc.secure_channel(target, creds, options=options))

    def _init(self, channel: grpc.Channel) -> None:
        self._channel = channel
        self._stub = _grpc.HostPlugStub(channel)  # type: ignore[no-untyped-call]

    @classmethod
    def unix(cls, path: Path) -> HostClient:
        """The admin socket: local credentials over a unix socket (root only, by the socket's mode)."""
        self = cls.__new__(cls)
        self._init(
            grpc.secure_channel(f"unix:{path}", grpc.local_channel_credentials(grpc.LocalConnectionType.UDS))
        )
        return self

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> HostClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @staticmethod
    def _call(fn: Callable[[], _T]) -> _T:
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
        rpc: Callable[..., _pb.AttachReply],
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
        reply = self._call(lambda: rpc(msg, timeout=timeout_s))
        return [granted_from_pb(v) for v in reply.vfs]

    def attach(
        self, pod_uid: str, pod_name: str, requests: Sequence[VfRequest], request_id: str, timeout_s: float
    ) -> list[GrantedVf]:
        return self._attach(self._stub.Attach, pod_uid, pod_name, requests, request_id, timeout_s)

    def claim(
        self, pod_uid: str, pod_name: str, requests: Sequence[VfRequest], request_id: str, timeout_s: float
    ) -> list[GrantedVf]:
        """From warm spares only; RESOURCE_EXHAUSTED when there are not enough."""
        return self._attach(self._stub.Claim, pod_uid, pod_name, requests, request_id, timeout_s)

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
