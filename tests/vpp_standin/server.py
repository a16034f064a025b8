"""A VPP binary-API stand-in FOR TESTS ONLY: a unix-socket server speaking VPP's socket framing, the
``sockclnt_create`` handshake and message table to the real ``vpp_papi`` client.

It packs and unpacks with the project's own minimal ``.api.json`` files (``api/``) plus the memclnt file
shipped in the ``vpp_papi`` wheel. Behaviour (error codes, interface names) is modelled on VPP's sources,
not checked against a VPP build: it proves that we drive ``vpp_papi`` correctly over the real protocol.
"""

from __future__ import annotations

import contextlib
import json
import socket
import struct
import threading
from collections.abc import Callable, Iterable
from importlib import resources
from pathlib import Path
from typing import Any

from vpp_papi.vpp_papi import VPPApiJSONFiles

from tests.vpp_standin.model import StandinError, VppModel

API_DIR = Path(__file__).parent / "api"
# vpp_papi's own memclnt definitions: ids 1..28 are fixed by VPP (vl_memory_msg_enum.h).
MEMCLNT_DIR = Path(str(resources.files("vpp_papi") / "data"))

_HEADER = struct.Struct(">QII")  # msgbuf_t: queue pointer (unused on the wire), data_len, gc timestamp
_SOCKCLNT_CREATE_ID = 15
_MODULE_ORDER = ("memclnt", "vpe", "vlib", "interface", "l2", "memif", "avf", "dev")
DRIVER_MESSAGES = {
    "avf": ("avf_create", "avf_create_reply", "avf_delete", "avf_delete_reply"),
    "dev": tuple(
        f"dev_{m}{r}"
        for m in ("attach", "detach", "create_port_if", "remove_port_if")
        for r in ("", "_reply")
    ),
}
VNET_API_ERROR_UNIMPLEMENTED = -9


class VppStandin:
    """Stand-in VPP API server on ``socket_path``; ``offer`` is the set of driver message sets ("dev", "avf")
    it puts in its message table. State lives in ``model`` and is lost on ``restart()`` (like VPP's)."""

    def __init__(self, socket_path: Path, *, offer: Iterable[str] = ("dev", "avf")) -> None:
        self.socket_path = socket_path
        self.offer = frozenset(offer)
        self.model = VppModel()
        self.calls: dict[str, int] = {}
        self._faults: dict[tuple[str, int], int | None] = {}
        self._messages, self._services, self._json = _load_definitions()
        self._ids: dict[str, int] = {}
        self._names: dict[int, str] = {}
        self._build_table()
        self._listener: socket.socket | None = None
        self._conns: list[socket.socket] = []
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []

    # ---- control, for tests -------------------------------------------------------------------------

    def start(self) -> VppStandin:
        self.socket_path.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            self.socket_path.unlink()
        lsn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        lsn.bind(str(self.socket_path))
        lsn.listen(16)
        self._listener = lsn
        t = threading.Thread(target=self._accept_loop, args=(lsn,), name="vpp-standin-accept", daemon=True)
        t.start()
        self._threads.append(t)
        return self

    def stop(self) -> None:
        """Like VPP dying: connections drop, the API socket goes, memif sockets stay on disk."""
        if self._listener is not None:
            with contextlib.suppress(OSError):
                self._listener.shutdown(socket.SHUT_RDWR)
            self._listener.close()
            self._listener = None
        with self._lock:
            conns, self._conns = self._conns, []
        for c in conns:
            with contextlib.suppress(OSError):
                c.shutdown(socket.SHUT_RDWR)
            c.close()
        for t in self._threads:
            t.join(timeout=2)
        self._threads.clear()
        self.model.crash()
        with contextlib.suppress(FileNotFoundError):
            self.socket_path.unlink()

    def restart(self) -> None:
        self.stop()
        self.model = VppModel()
        self.calls.clear()
        self.start()

    def fail_on(self, message: str, nth: int, retval: int) -> None:
        """Make the ``nth`` call (1-based, counted from now) of ``message`` fail with ``retval``."""
        self._faults[(message, self.calls.get(message, 0) + nth)] = retval

    def stall_on(self, message: str, nth: int) -> None:
        """Never answer the ``nth`` call of ``message`` (the client waits for its read timeout)."""
        self._faults[(message, self.calls.get(message, 0) + nth)] = None

    def __enter__(self) -> VppStandin:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ---- protocol -----------------------------------------------------------------------------------

    def _build_table(self) -> None:
        hidden = {m for drv, msgs in DRIVER_MESSAGES.items() if drv not in self.offer for m in msgs}
        next_id = 1
        for module in _MODULE_ORDER:
            for name in self._json[module]:
                if name in hidden:
                    continue
                self._ids[name] = next_id
                self._names[next_id] = name
                next_id += 1
        assert self._ids["sockclnt_create"] == _SOCKCLNT_CREATE_ID, "memclnt order changed"

    def _accept_loop(self, lsn: socket.socket) -> None:
        while True:
            try:
                conn, _ = lsn.accept()
            except OSError:
                return
            with self._lock:
                self._conns.append(conn)
            t = threading.Thread(target=self._serve, args=(conn,), name="vpp-standin-conn", daemon=True)
            t.start()
            self._threads.append(t)

    def _serve(self, conn: socket.socket) -> None:
        # One thread per client: its messages are handled in order, which dumps followed by
        # control_ping rely on.
        with contextlib.suppress(OSError):
            while (payload := _read_frame(conn)) is not None:
                for reply in self._handle(payload):
                    conn.sendall(_HEADER.pack(0, len(reply), 0) + reply)
        conn.close()

    def _handle(self, payload: bytes) -> list[bytes]:
        (msg_id,) = struct.unpack_from(">H", payload)
        name = self._names.get(msg_id)
        if name is None:
            return []
        req, _ = self._messages[name].unpack(payload)
        self.calls[name] = self.calls.get(name, 0) + 1
        reply_name = self._services.get(name, {}).get("reply", name + "_reply")
        key = (name, self.calls[name])
        if key in self._faults:
            fault = self._faults.pop(key)
            return [] if fault is None else [self._pack(reply_name, req, {"retval": fault})]
        if name == "sockclnt_create":
            return [self._handshake(req)]
        handler: Callable[[Any], Any] | None = getattr(self, "_on_" + name, None)
        if handler is None:
            handler = getattr(self.model, name, None)
        if handler is None:
            return [self._pack(reply_name, req, {"retval": VNET_API_ERROR_UNIMPLEMENTED})]
        try:
            result = handler(req)
        except StandinError as e:
            return [self._pack(reply_name, req, {"retval": e.retval, "error_string": str(e)})]
        if self._services.get(name, {}).get("stream"):
            return [self._pack(reply_name, req, d) for d in result]
        return [self._pack(reply_name, req, result or {})]

    def _pack(self, name: str, req: Any, fields: dict[str, Any]) -> bytes:
        msg = self._messages[name]
        data = {"_vl_msg_id": self._ids[name], "context": getattr(req, "context", 0), **fields}
        if "client_index" in msg.fields:
            data.setdefault("client_index", getattr(req, "client_index", 0))
        known = {k: v for k, v in data.items() if k in msg.fields}
        return bytes(msg.pack(known))

    def _handshake(self, req: Any) -> bytes:
        table = [
            {"index": i, "name": f"{n}_{self._messages[n].crc[2:]}"} for n, i in sorted(self._ids.items())
        ]
        return self._pack(
            "sockclnt_create_reply",
            req,
            # VPP: index = pool index | 1 << 31 (socket_api.c); the client echoes it as client_index.
            {"response": 0, "index": 1 << 31, "count": len(table), "message_table": table},
        )

    def _on_sockclnt_delete(self, req: Any) -> dict[str, Any]:
        return {"response": 1}

    def _on_control_ping(self, req: Any) -> dict[str, Any]:
        return {"retval": 0, "client_index": req.client_index, "vpe_pid": 1}

    def _on_memclnt_keepalive(self, req: Any) -> dict[str, Any]:
        return {"retval": 0}

    def _on_get_api_json(self, req: Any) -> dict[str, Any]:
        files = [API_DIR / f"{m}.api.json" for m in _MODULE_ORDER if m != "memclnt"]
        return {"retval": 0, "json": json.dumps([json.loads(f.read_text()) for f in files])}


def _read_frame(conn: socket.socket) -> bytes | None:
    header = _recv_exact(conn, _HEADER.size)
    if header is None:
        return None
    _, length, _ = _HEADER.unpack(header)
    return _recv_exact(conn, length)


def _recv_exact(conn: socket.socket, size: int) -> bytes | None:
    buf = bytearray()
    while len(buf) < size:
        chunk = conn.recv(size - len(buf))
        if not chunk:
            return None
        buf += chunk
    return bytes(buf)


def _load_definitions() -> tuple[dict[str, Any], dict[str, Any], dict[str, list[str]]]:
    messages: dict[str, Any] = {}
    services: dict[str, Any] = {}
    order: dict[str, list[str]] = {}
    for module in _MODULE_ORDER:
        path = (MEMCLNT_DIR if module == "memclnt" else API_DIR) / f"{module}.api.json"
        text = path.read_text()
        order[module] = [m[0] for m in json.loads(text)["messages"]]
        m, s = VPPApiJSONFiles.process_json_str(text)
        messages.update(m)
        services.update(s)
    return messages, services, order
