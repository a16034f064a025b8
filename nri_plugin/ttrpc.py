"""A ttrpc endpoint over NRI's multiplexed socket: serves the plugin service, calls the runtime service.

One reader thread splits the socket into mux frames and ttrpc messages; requests are handed to an
executor so a slow handler never stalls the reader (or the answers to our own calls); writes of whole
messages are serialized by a lock so frames of two messages never interleave.
"""

from __future__ import annotations

import logging
import socket
import threading
from collections.abc import Callable
from concurrent.futures import Executor, Future
from dataclasses import dataclass, field

from google.protobuf.message import DecodeError

from nri_plugin.framing import (
    PLUGIN_SERVICE_CONN,
    RUNTIME_SERVICE_CONN,
    TYPE_REQUEST,
    TYPE_RESPONSE,
    FramingError,
    MuxDecoder,
    TtrpcDecoder,
    TtrpcMessage,
    encode_mux,
    encode_ttrpc,
)
from nri_plugin.nri_pb import ttrpc_pb2 as _ttrpc

log = logging.getLogger(__name__)

# gRPC status codes that ttrpc uses.
CODE_OK = 0
CODE_UNKNOWN = 2
CODE_INVALID_ARGUMENT = 3
CODE_DEADLINE_EXCEEDED = 4
CODE_RESOURCE_EXHAUSTED = 8
CODE_UNIMPLEMENTED = 12
CODE_UNAVAILABLE = 14


class RpcError(Exception):
    """A ttrpc call failed with a status; raised by handlers to answer with that status, too."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(f"ttrpc status {code}: {message}")
        self.code = code
        self.message = message


class ConnectionClosed(RpcError):
    def __init__(self, reason: str) -> None:
        super().__init__(CODE_UNAVAILABLE, f"connection closed: {reason}")


@dataclass(frozen=True)
class IncomingRequest:
    service: str
    method: str
    payload: bytes
    timeout_nano: int
    metadata: dict[str, str] = field(default_factory=dict)


# Returns the response payload, or raises RpcError for an error status.
RequestHandler = Callable[[IncomingRequest], bytes]


class MuxTtrpcConnection:
    def __init__(self, sock: socket.socket, handler: RequestHandler, executor: Executor) -> None:
        self._sock = sock
        self._handler = handler
        self._executor = executor
        self._write_lock = threading.Lock()
        self._state_lock = threading.Lock()
        self._pending: dict[int, Future[_ttrpc.Response]] = {}
        self._next_stream = 1  # our calls: odd ids from 1, +2 per call
        self._last_incoming = 0
        self._closed = threading.Event()
        self.close_reason = ""
        self._reader = threading.Thread(target=self._read_loop, name="nri-reader", daemon=True)

    def start(self) -> None:
        self._reader.start()

    @property
    def closed(self) -> bool:
        return self._closed.is_set()

    def wait_closed(self, timeout: float | None = None) -> bool:
        return self._closed.wait(timeout)

    def close(self, reason: str = "closed by plugin") -> None:
        with self._state_lock:
            if self._closed.is_set():
                return
            self.close_reason = reason
            self._closed.set()
            pending, self._pending = self._pending, {}
        try:
            self._sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass  # already disconnected
        self._sock.close()
        for fut in pending.values():
            fut.set_exception(ConnectionClosed(reason))

    # --- calls we make (runtime service) ---

    def call(self, service: str, method: str, payload: bytes, timeout: float) -> bytes:
        req = _ttrpc.Request(service=service, method=method, payload=payload, timeout_nano=int(timeout * 1e9))
        fut: Future[_ttrpc.Response] = Future()
        with self._state_lock:
            if self._closed.is_set():
                raise ConnectionClosed(self.close_reason)
            stream_id = self._next_stream
            self._next_stream += 2
            self._pending[stream_id] = fut
        self._send(RUNTIME_SERVICE_CONN, encode_ttrpc(stream_id, TYPE_REQUEST, req.SerializeToString()))
        try:
            resp = fut.result(timeout)
        except TimeoutError:
            with self._state_lock:
                self._pending.pop(stream_id, None)
            raise RpcError(
                CODE_DEADLINE_EXCEEDED, f"{service}/{method}: no answer in {timeout:.1f}s"
            ) from None
        # A successful response may carry no status at all (proto3 default): that means OK.
        if resp.HasField("status") and resp.status.code != CODE_OK:
            raise RpcError(resp.status.code, f"{service}/{method}: {resp.status.message}")
        return resp.payload

    # --- wire ---

    def _send(self, conn_id: int, message: bytes) -> None:
        frames = encode_mux(conn_id, message)
        with self._write_lock:
            try:
                for frame in frames:
                    self._sock.sendall(frame)
            except OSError as e:
                self.close(f"write failed: {e}")
                raise ConnectionClosed(self.close_reason) from e

    def _read_loop(self) -> None:
        mux = MuxDecoder()
        streams = {PLUGIN_SERVICE_CONN: TtrpcDecoder(), RUNTIME_SERVICE_CONN: TtrpcDecoder()}
        reason = "peer closed the connection"
        try:
            while True:
                data = self._sock.recv(65536)
                if not data:
                    if mux.pending or any(d.pending for d in streams.values()):
                        reason = f"peer closed the connection in the middle of a frame ({mux.pending} bytes)"
                    break
                for conn_id, payload in mux.feed(data):
                    decoder = streams.get(conn_id)
                    if decoder is None:
                        raise FramingError(f"mux frame for unknown connection id {conn_id}")
                    for msg in decoder.feed(payload):
                        self._dispatch(conn_id, msg)
                if mux.error is not None:
                    raise mux.error
        except FramingError as e:
            reason = f"protocol error: {e}"
        except OSError as e:
            reason = f"read failed: {e}"
        if not self._closed.is_set():
            log.warning("NRI connection lost: %s", reason)
        self.close(reason)

    def _dispatch(self, conn_id: int, msg: TtrpcMessage) -> None:
        if conn_id == RUNTIME_SERVICE_CONN and msg.msg_type == TYPE_RESPONSE:
            self._on_response(msg)
        elif conn_id == PLUGIN_SERVICE_CONN and msg.msg_type == TYPE_REQUEST:
            self._on_request(msg)
        else:
            raise FramingError(f"unexpected ttrpc message type {msg.msg_type} on connection {conn_id}")

    def _on_response(self, msg: TtrpcMessage) -> None:
        with self._state_lock:
            fut = self._pending.pop(msg.stream_id, None)
        if fut is None:
            log.warning("NRI: dropping a response for unknown or expired stream %d", msg.stream_id)
            return
        resp = _ttrpc.Response()
        try:
            resp.ParseFromString(msg.data)
        except DecodeError as e:
            fut.set_exception(RpcError(CODE_UNKNOWN, f"undecodable response: {e}"))
            return
        fut.set_result(resp)

    def _on_request(self, msg: TtrpcMessage) -> None:
        # ttrpc callers use odd, strictly increasing stream ids; anything else is a broken peer.
        if msg.stream_id % 2 == 0 or msg.stream_id <= self._last_incoming:
            raise FramingError(f"bad request stream id {msg.stream_id} (last {self._last_incoming})")
        self._last_incoming = msg.stream_id
        if msg.oversized:
            self._respond(
                msg.stream_id,
                b"",
                RpcError(CODE_RESOURCE_EXHAUSTED, f"message of {msg.oversized} bytes is too large"),
            )
            return
        req = _ttrpc.Request()
        try:
            req.ParseFromString(msg.data)
        except DecodeError as e:
            log.warning("NRI: undecodable request on stream %d: %s", msg.stream_id, e)
            self._respond(
                msg.stream_id, b"", RpcError(CODE_INVALID_ARGUMENT, f"unmarshal request error: {e}")
            )
            return
        incoming = IncomingRequest(
            service=req.service,
            method=req.method,
            payload=req.payload,
            timeout_nano=req.timeout_nano,
            metadata={kv.key: kv.value for kv in req.metadata},
        )
        self._executor.submit(self._serve, msg.stream_id, incoming)

    def _serve(self, stream_id: int, req: IncomingRequest) -> None:
        try:
            payload = self._handler(req)
        except RpcError as e:
            self._respond(stream_id, b"", e)
            return
        except Exception as e:
            log.exception("NRI: handler for %s/%s crashed", req.service, req.method)
            self._respond(stream_id, b"", RpcError(CODE_UNKNOWN, f"{type(e).__name__}: {e}"))
            return
        self._respond(stream_id, payload, None)

    def _respond(self, stream_id: int, payload: bytes, error: RpcError | None) -> None:
        resp = _ttrpc.Response(payload=payload)
        if error is not None:
            # Always set status on errors: whether a peer accepts an error without one is unverified.
            resp.status.code = error.code
            resp.status.message = error.message
        try:
            self._send(PLUGIN_SERVICE_CONN, encode_ttrpc(stream_id, TYPE_RESPONSE, resp.SerializeToString()))
        except ConnectionClosed:
            log.warning("NRI: could not answer stream %d: connection closed", stream_id)
