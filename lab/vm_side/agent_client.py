"""Host side of the lab agent: calls operations in the guest over the virtio-serial port's unix socket."""

from __future__ import annotations

import itertools
import logging
import socket
import threading
import time
from concurrent.futures import Future
from pathlib import Path
from typing import Any

from lab.vm_side import wire

log = logging.getLogger(__name__)


class GuestError(Exception):
    """An operation failed inside the guest; the text is the guest's error."""


class GuestAgent:
    """One connection to the agent; calls may overlap (replies are matched by id)."""

    def __init__(self, socket_path: Path, connect_timeout_s: float = 30.0) -> None:
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        deadline = time.monotonic() + connect_timeout_s
        while True:
            try:
                self._sock.connect(str(socket_path))
                break
            except (FileNotFoundError, ConnectionRefusedError):
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        self._ids = itertools.count(1)
        self._pending: dict[int, Future[wire.Reply]] = {}
        self._lock = threading.Lock()
        self._reader = threading.Thread(target=self._read, name="lab-agent-reader", daemon=True)
        self._reader.start()

    def _read(self) -> None:
        lines = wire.LineBuffer()
        while data := self._sock.recv(65536):
            for line in lines.feed(data):
                try:
                    reply = wire.decode_reply(line)
                except ValueError as e:
                    # Stray console-like output or a reply to an earlier connection: not ours.
                    log.debug("ignoring a line from the lab agent: %s", e)
                    continue
                with self._lock:
                    fut = self._pending.pop(reply.id, None)
                if fut is not None:
                    fut.set_result(reply)
        with self._lock:
            pending, self._pending = self._pending, {}
        for fut in pending.values():
            fut.set_exception(GuestError("the lab agent's connection closed (guest gone?)"))

    def call(self, op: str, timeout_s: float = 60.0, **args: Any) -> Any:
        """Runs `op` in the guest and returns its result; raises GuestError with the guest's message."""
        req = wire.Request(next(self._ids), op, args)
        fut: Future[wire.Reply] = Future()
        with self._lock:
            self._pending[req.id] = fut
        self._sock.sendall(wire.encode(req))
        try:
            reply = fut.result(timeout_s)
        except TimeoutError:
            with self._lock:
                self._pending.pop(req.id, None)
            raise TimeoutError(f"lab agent: {op} gave no answer within {timeout_s} s") from None
        if not reply.ok:
            raise GuestError(f"{op} in the guest failed: {reply.error}")
        return reply.result

    def sh(self, script: str, timeout_s: float = 60.0) -> str:
        """Runs a shell script in the guest; returns stdout, raises GuestError on a non-zero exit."""
        res = self.call("run", timeout_s=timeout_s + 5, argv=["sh", "-c", script], timeout=timeout_s)
        if res["rc"] != 0:
            raise GuestError(f"guest shell `{script}` exited {res['rc']}: {res['stderr'].strip()}")
        return str(res["stdout"])

    def close(self) -> None:
        self._sock.close()
