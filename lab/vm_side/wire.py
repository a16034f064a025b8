"""The lab agent's wire format: one JSON object per line, each way, over the guest's virtio-serial port.

Request `{"id": n, "op": name, "args": {...}}`; reply `{"id": n, "ok": true, "result": ...}` or
`{"id": n, "ok": false, "error": text}`. Replies may come out of order (the agent runs requests in threads),
so the client matches them by id.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

MAX_LINE = 4 << 20  # a reply carrying a whole log file is the largest thing sent


@dataclass(frozen=True)
class Request:
    id: int
    op: str
    args: dict[str, Any]


@dataclass(frozen=True)
class Reply:
    id: int
    ok: bool
    result: Any = None
    error: str = ""


def encode(msg: Request | Reply) -> bytes:
    if isinstance(msg, Request):
        obj: dict[str, Any] = {"id": msg.id, "op": msg.op, "args": msg.args}
    elif msg.ok:
        obj = {"id": msg.id, "ok": True, "result": msg.result}
    else:
        obj = {"id": msg.id, "ok": False, "error": msg.error}
    return json.dumps(obj, separators=(",", ":")).encode() + b"\n"


def _object(line: bytes) -> dict[str, Any]:
    obj = json.loads(line)
    if not isinstance(obj, dict) or not isinstance(obj.get("id"), int):
        raise ValueError(f"lab agent message without an integer id: {line[:200]!r}")
    return obj


def decode_request(line: bytes) -> Request:
    obj = _object(line)
    op, args = obj.get("op"), obj.get("args", {})
    if not isinstance(op, str) or not isinstance(args, dict):
        raise ValueError(f"lab agent request needs a string op and an args object: {line[:200]!r}")
    return Request(obj["id"], op, args)


def decode_reply(line: bytes) -> Reply:
    obj = _object(line)
    return Reply(obj["id"], bool(obj.get("ok")), obj.get("result"), str(obj.get("error", "")))


class LineBuffer:
    """Splits a byte stream into lines; refuses a line longer than MAX_LINE instead of growing forever."""

    def __init__(self) -> None:
        self._buf = b""

    def feed(self, data: bytes) -> list[bytes]:
        self._buf += data
        *lines, self._buf = self._buf.split(b"\n")
        if len(self._buf) > MAX_LINE:
            self._buf = b""
            raise ValueError(f"lab agent line longer than {MAX_LINE} bytes")
        return [line for line in lines if line.strip()]
