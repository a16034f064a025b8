"""Pure framing for NRI's connection multiplexer and ttrpc: encoders and incremental decoders.

Written by hand because no Python implementation of either exists. Layouts (all big-endian):
- mux frame: uint32 conn_id | uint32 payload_len | payload  (NRI pkg/net/multiplex)
- ttrpc message: uint32 data_len | uint32 stream_id | uint8 type | uint8 flags | data  (containerd/ttrpc)
A ttrpc message may span several mux frames, and containerd's reader cannot take a mux frame larger than
its 4096-byte buffer, so outgoing messages are cut into frames of at most MAX_OUT_FRAME bytes.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

MUX_HEADER = struct.Struct(">II")
TTRPC_HEADER = struct.Struct(">IIBB")

MAX_MUX_PAYLOAD = 1 << 24  # NRI's limit for one mux frame
MAX_OUT_FRAME = 4096  # containerd's bufio reader size; a larger frame makes it drop the plugin
MAX_TTRPC_DATA = 4 << 20  # ttrpc's message size limit

# NRI's two logical connections on the one socket.
PLUGIN_SERVICE_CONN = 1  # runtime calls the plugin
RUNTIME_SERVICE_CONN = 2  # plugin calls the runtime

TYPE_REQUEST = 0x1
TYPE_RESPONSE = 0x2
TYPE_DATA = 0x3


class FramingError(Exception):
    """The peer sent bytes that break the framing; the connection cannot be trusted any more."""


def encode_mux(conn_id: int, data: bytes, max_frame: int = MAX_OUT_FRAME) -> list[bytes]:
    """Cut `data` into mux frames of at most `max_frame` payload bytes each."""
    if not 0 < conn_id < 1 << 32:
        raise ValueError(f"mux conn id {conn_id} out of range")
    return [
        MUX_HEADER.pack(conn_id, len(chunk)) + chunk
        for chunk in (data[i : i + max_frame] for i in range(0, max(len(data), 1), max_frame))
    ]


def encode_ttrpc(stream_id: int, msg_type: int, data: bytes, flags: int = 0) -> bytes:
    if len(data) > MAX_TTRPC_DATA:
        raise ValueError(f"ttrpc message of {len(data)} bytes is over the {MAX_TTRPC_DATA}-byte limit")
    return TTRPC_HEADER.pack(len(data), stream_id, msg_type, flags) + data


class MuxDecoder:
    """Splits the socket's byte stream into (conn_id, payload) frames.

    A broken frame does not hide the good frames before it: `feed` returns those and sets `error`; the
    caller handles them, then gives up on the connection.
    """

    def __init__(self) -> None:
        self._buf = bytearray()
        self.error: FramingError | None = None

    @property
    def pending(self) -> int:
        """Bytes received that do not make a whole frame yet (non-zero at EOF: a truncated frame)."""
        return len(self._buf)

    def feed(self, data: bytes) -> list[tuple[int, bytes]]:
        if self.error is not None:
            raise self.error
        self._buf += data
        frames: list[tuple[int, bytes]] = []
        while len(self._buf) >= MUX_HEADER.size:
            conn_id, length = MUX_HEADER.unpack_from(self._buf)
            if conn_id == 0:
                self.error = FramingError("mux frame for reserved connection id 0")
            elif length > MAX_MUX_PAYLOAD:
                self.error = FramingError(
                    f"mux frame of {length} bytes is over the {MAX_MUX_PAYLOAD}-byte limit"
                )
            if self.error is not None:
                break
            end = MUX_HEADER.size + length
            if len(self._buf) < end:
                break
            frames.append((conn_id, bytes(self._buf[MUX_HEADER.size : end])))
            del self._buf[:end]
        return frames


@dataclass(frozen=True)
class TtrpcMessage:
    stream_id: int
    msg_type: int
    flags: int
    data: bytes
    oversized: int = 0  # >0: the message had this many bytes and was discarded (data is empty)


class TtrpcDecoder:
    """Reassembles ttrpc messages from the joined payloads of one mux connection.

    An oversized message is skipped byte for byte (the stream stays in sync) and reported with
    `oversized` set, so the caller can answer it with ResourceExhausted as ttrpc does.
    """

    def __init__(self) -> None:
        self._buf = bytearray()
        self._skip = 0

    @property
    def pending(self) -> int:
        return len(self._buf) + self._skip

    def feed(self, data: bytes) -> list[TtrpcMessage]:
        self._buf += data
        out: list[TtrpcMessage] = []
        while True:
            if self._skip:
                n = min(self._skip, len(self._buf))
                del self._buf[:n]
                self._skip -= n
                if self._skip:
                    return out
            if len(self._buf) < TTRPC_HEADER.size:
                return out
            length, stream_id, msg_type, flags = TTRPC_HEADER.unpack_from(self._buf)
            if length > MAX_TTRPC_DATA:
                del self._buf[: TTRPC_HEADER.size]
                self._skip = length
                out.append(TtrpcMessage(stream_id, msg_type, flags, b"", oversized=length))
                continue
            end = TTRPC_HEADER.size + length
            if len(self._buf) < end:
                return out
            out.append(TtrpcMessage(stream_id, msg_type, flags, bytes(self._buf[TTRPC_HEADER.size : end])))
            del self._buf[:end]
