"""A TCP gate between the plugin and the host service: while closed it resets every connection and
refuses new ones, as a host port dropped by a firewall or a network cut would look to the plugin.

Written by hand: it is a test fixture of some 80 lines, and no maintained library offers a forwarder that
can be cut and restored on demand from the same process.
"""

from __future__ import annotations

import contextlib
import selectors
import socket
import threading


class PortGate:
    """Forwards 127.0.0.1:`port` to 127.0.0.1:`target` while open."""

    def __init__(self, target: int) -> None:
        self.target = target
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self._open = threading.Event()
        self._open.set()
        self._lock = threading.Lock()
        self._conns: set[socket.socket] = set()
        self._stopped = False
        threading.Thread(target=self._accept, name="gate-accept", daemon=True).start()

    @property
    def is_open(self) -> bool:
        return self._open.is_set()

    def close_gate(self) -> None:
        """Reset every live connection; new ones are reset at once until `open_gate`."""
        self._open.clear()
        with self._lock:
            conns, self._conns = self._conns, set()
        for s in conns:
            _reset(s)

    def open_gate(self) -> None:
        self._open.set()

    def stop(self) -> None:
        self._stopped = True
        self.close_gate()
        self._listener.close()

    def _accept(self) -> None:
        while not self._stopped:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            if not self._open.is_set():
                _reset(client)
                continue
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target), timeout=2)
            except OSError:
                _reset(client)  # the host is down: the plugin sees the refusal it would see directly
                continue
            upstream.settimeout(None)
            with self._lock:
                self._conns |= {client, upstream}
            threading.Thread(target=self._pump, args=(client, upstream), daemon=True).start()

    def _pump(self, a: socket.socket, b: socket.socket) -> None:
        sel = selectors.DefaultSelector()
        sel.register(a, selectors.EVENT_READ, b)
        sel.register(b, selectors.EVENT_READ, a)
        try:
            while True:
                for key, _ in sel.select():
                    src: socket.socket = key.fileobj  # type: ignore[assignment]
                    data = src.recv(65536)
                    if not data:
                        return
                    key.data.sendall(data)
        except OSError:
            return
        finally:
            sel.close()
            with self._lock:
                self._conns -= {a, b}
            _reset(a)
            _reset(b)


def _reset(s: socket.socket) -> None:
    with contextlib.suppress(OSError):
        # SO_LINGER 0: close sends RST, as a dropped port does, instead of a clean FIN
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    with contextlib.suppress(OSError):
        s.close()
