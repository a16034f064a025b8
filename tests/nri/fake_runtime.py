"""FakeRuntime: the runtime's end of an NRI socket, for wire-level tests of the stub.

It speaks the framing the real containerd speaks (mux frames, ttrpc messages) and records every frame it
receives, so tests can check what the plugin put on the wire; it can also send raw bytes to play a broken
peer. The real containerd is exercised in tests/nri/test_containerd_nri.py.
"""

from __future__ import annotations

import socket
import threading
from dataclasses import dataclass

from nri_plugin.framing import (
    MUX_HEADER,
    PLUGIN_SERVICE_CONN,
    RUNTIME_SERVICE_CONN,
    TYPE_REQUEST,
    TYPE_RESPONSE,
    MuxDecoder,
    TtrpcDecoder,
    TtrpcMessage,
    encode_mux,
    encode_ttrpc,
)
from nri_plugin.nri_pb import nri_pb2 as nri
from nri_plugin.nri_pb import ttrpc_pb2 as ttrpc


@dataclass
class Reply:
    code: int
    message: str
    payload: bytes
    had_status: bool


class FakeRuntime:
    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.sock.settimeout(10)
        self._mux = MuxDecoder()
        self._streams = {PLUGIN_SERVICE_CONN: TtrpcDecoder(), RUNTIME_SERVICE_CONN: TtrpcDecoder()}
        self._inbox: list[tuple[int, TtrpcMessage]] = []
        self.frame_sizes: list[int] = []  # payload size of every mux frame the plugin sent
        self._next_stream = 1
        self._lock = threading.Lock()
        self.registrations: list[ttrpc.Request] = []  # the RegisterPlugin envelopes (timeout_nano etc.)

    def _pump(self) -> None:
        data = self.sock.recv(65536)
        if not data:
            raise EOFError("plugin closed the connection")
        for conn_id, payload in self._mux.feed(data):
            self.frame_sizes.append(len(payload))
            self._inbox.extend((conn_id, m) for m in self._streams[conn_id].feed(payload))

    def receive(self, conn_id: int, msg_type: int) -> TtrpcMessage:
        while True:
            for i, (cid, msg) in enumerate(self._inbox):
                if cid == conn_id and msg.msg_type == msg_type:
                    del self._inbox[i]
                    return msg
            self._pump()

    def closed_by_peer(self) -> bool:
        """True once the plugin has closed its end (drains whatever was still in flight)."""
        try:
            while True:
                self._pump()
        except EOFError:
            return True
        except TimeoutError:
            return False

    # --- the runtime service side: answer the plugin's RegisterPlugin ---

    def accept_registration(self) -> nri.RegisterPluginRequest:
        msg = self.receive(RUNTIME_SERVICE_CONN, TYPE_REQUEST)
        req = ttrpc.Request.FromString(msg.data)
        assert (req.service, req.method) == ("nri.pkg.api.v1alpha1.Runtime", "RegisterPlugin")
        self.registrations.append(req)
        # Like containerd: a successful reply with no status field at all.
        self.send_raw(RUNTIME_SERVICE_CONN, encode_ttrpc(msg.stream_id, TYPE_RESPONSE, b""))
        return nri.RegisterPluginRequest.FromString(req.payload)

    # --- the plugin service side: call the plugin ---

    def call(
        self,
        method: str,
        payload: bytes,
        *,
        service: str = "nri.pkg.api.v1alpha1.Plugin",
        timeout_nano: int = 2_000_000_000,
    ) -> Reply:
        req = ttrpc.Request(service=service, method=method, payload=payload, timeout_nano=timeout_nano)
        return self.call_raw(req.SerializeToString())

    def call_raw(self, request_bytes: bytes) -> Reply:
        with self._lock:
            stream_id = self._next_stream
            self._next_stream += 2
        self.send_raw(PLUGIN_SERVICE_CONN, encode_ttrpc(stream_id, TYPE_REQUEST, request_bytes))
        msg = self.receive(PLUGIN_SERVICE_CONN, TYPE_RESPONSE)
        assert msg.stream_id == stream_id, f"answer on stream {msg.stream_id}, asked on {stream_id}"
        resp = ttrpc.Response.FromString(msg.data)
        return Reply(resp.status.code, resp.status.message, resp.payload, resp.HasField("status"))

    def configure(
        self,
        config: str = "",
        *,
        runtime_name: str = "fake",
        runtime_version: str = "0",
        registration_timeout_ms: int = 0,
        request_timeout_ms: int = 0,
        nri_version: str = "",
    ) -> nri.ConfigureResponse:
        req = nri.ConfigureRequest(
            config=config,
            runtime_name=runtime_name,
            runtime_version=runtime_version,
            registration_timeout=registration_timeout_ms,
            request_timeout=request_timeout_ms,
            NRI_version=nri_version,
        )
        reply = self.call("Configure", req.SerializeToString())
        assert reply.code == 0, reply.message
        return nri.ConfigureResponse.FromString(reply.payload)

    def send_raw(self, conn_id: int, message: bytes) -> None:
        for frame in encode_mux(conn_id, message):
            self.sock.sendall(frame)

    def send_bytes(self, data: bytes) -> None:
        self.sock.sendall(data)

    @staticmethod
    def mux_header(conn_id: int, length: int) -> bytes:
        return MUX_HEADER.pack(conn_id, length)
