"""The few rtnetlink messages the guest side needs, over a plain AF_NETLINK socket (linux/rtnetlink.h).

A socket in another netns is opened by a short-lived thread that enters that netns with setns(2): a
netlink socket stays bound to the netns it was created in, and setns changes only the calling thread. That
is a thread start (tens of microseconds) instead of the helper process pyroute2 forks for every
other-netns socket (about 25 ms here), and it keeps pyroute2 (and asyncio) out of the plugin process.
"""

from __future__ import annotations

import ctypes
import errno
import ipaddress
import os
import socket
import struct
import threading
from collections.abc import Iterator
from dataclasses import dataclass

NETLINK_ROUTE = 0
RTMGRP_LINK = 1
CLONE_NEWNET = 0x40000000

RTM_NEWLINK, RTM_GETLINK, RTM_NEWADDR = 16, 18, 20
NLMSG_ERROR, NLMSG_DONE = 2, 3
NLM_F_REQUEST, NLM_F_ACK, NLM_F_EXCL, NLM_F_CREATE, NLM_F_DUMP = 0x1, 0x4, 0x200, 0x400, 0x300
IFLA_ADDRESS, IFLA_IFNAME, IFLA_MTU, IFLA_NET_NS_FD = 1, 3, 4, 28
IFA_ADDRESS, IFA_LOCAL = 1, 2
IFF_UP = 0x1

_NLMSGHDR = struct.Struct("=IHHII")  # len, type, flags, seq, pid
_IFINFOMSG = struct.Struct("=BxHiII")  # family, pad, type, index, flags, change
_IFADDRMSG = struct.Struct("=BBBBi")  # family, prefixlen, flags, scope, index
_RTATTR = struct.Struct("=HH")  # len, type
_ERRNO = struct.Struct("=i")
_RECV_BYTES = 1 << 16


class RtnlError(OSError):
    """The kernel refused a request (errno from its NLMSG_ERROR answer) or answered garbage."""


@dataclass(frozen=True)
class Link:
    index: int
    ifname: str
    mac: str | None  # lower-case aa:bb:..., None for links without a hardware address
    up: bool


def _align(n: int) -> int:
    return (n + 3) & ~3


def attr(kind: int, payload: bytes) -> bytes:
    """One rtattr, padded to 4 bytes."""
    raw = _RTATTR.pack(_RTATTR.size + len(payload), kind) + payload
    return raw + b"\0" * (_align(len(raw)) - len(raw))


def attrs(data: bytes) -> dict[int, bytes]:
    """The rtattrs of a message body, by type (the last one wins)."""
    out: dict[int, bytes] = {}
    pos = 0
    while pos + _RTATTR.size <= len(data):
        length, kind = _RTATTR.unpack_from(data, pos)
        if length < _RTATTR.size:
            break
        out[kind & 0x3FFF] = data[pos + _RTATTR.size : pos + length]  # without NLA_F_NESTED/BYTEORDER
        pos += _align(length)
    return out


def message(kind: int, flags: int, seq: int, body: bytes) -> bytes:
    return _NLMSGHDR.pack(_NLMSGHDR.size + len(body), kind, flags, seq, 0) + body


def messages(data: bytes) -> Iterator[tuple[int, int, bytes]]:
    """(type, seq, body) of every netlink message in one datagram."""
    pos = 0
    while pos + _NLMSGHDR.size <= len(data):
        length, kind, _flags, seq, _pid = _NLMSGHDR.unpack_from(data, pos)
        if length < _NLMSGHDR.size:
            raise RtnlError(errno.EBADMSG, f"netlink message of length {length} at byte {pos}")
        yield kind, seq, data[pos + _NLMSGHDR.size : pos + length]
        pos += _align(length)


def ifinfo(index: int = 0, up: bool | None = None) -> bytes:
    return _IFINFOMSG.pack(socket.AF_UNSPEC, 0, index, IFF_UP if up else 0, 0 if up is None else IFF_UP)


def parse_link(body: bytes) -> Link:
    _family, _type, index, flags, _change = _IFINFOMSG.unpack_from(body)
    found = attrs(body[_IFINFOMSG.size :])
    hw = found.get(IFLA_ADDRESS)
    return Link(
        index=index,
        ifname=found.get(IFLA_IFNAME, b"").rstrip(b"\0").decode(),
        mac=":".join(f"{b:02x}" for b in hw) if hw else None,
        up=bool(flags & IFF_UP),
    )


def _cstr(text: str) -> bytes:
    return text.encode() + b"\0"


_libc: ctypes.CDLL | None = None


def _enter_netns(fd: int) -> None:
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(None, use_errno=True)
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        code = ctypes.get_errno()
        raise RtnlError(code, f"setns into the network namespace: {os.strerror(code)}")


def _socket_in(netns_path: str) -> socket.socket:
    """A netlink socket bound to the netns at `netns_path` (FileNotFoundError when it is gone)."""
    fd = os.open(netns_path, os.O_RDONLY | os.O_CLOEXEC)
    made: list[socket.socket | BaseException] = []

    def run() -> None:  # this thread ends right after, so its netns never matters again
        try:
            _enter_netns(fd)
            made.append(
                socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, NETLINK_ROUTE)
            )
        except BaseException as e:  # noqa: BLE001 - handed to the caller's thread and raised there
            made.append(e)

    try:
        t = threading.Thread(target=run, name="netns-socket")
        t.start()
        t.join()
    finally:
        os.close(fd)
    if isinstance(made[0], BaseException):
        raise made[0]
    return made[0]


class Rtnl:
    """One rtnetlink socket in one netns (None: this thread's), for requests; `groups` subscribes it."""

    def __init__(self, netns_path: str | None = None, groups: int = 0) -> None:
        if netns_path is None:
            self._sock = socket.socket(
                socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, NETLINK_ROUTE
            )
        else:
            self._sock = _socket_in(netns_path)
        self._sock.bind((0, groups))
        self._seq = 0

    def __enter__(self) -> Rtnl:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._sock.close()

    def fileno(self) -> int:
        return self._sock.fileno()

    def drain(self) -> None:
        """Read and drop what is queued (notifications), without blocking."""
        while True:
            try:
                self._sock.recv(_RECV_BYTES, socket.MSG_DONTWAIT)
            except BlockingIOError:
                return

    def _request(self, kind: int, flags: int, body: bytes) -> list[bytes]:
        """Send one request; the bodies of the answers (a dump's parts), after the kernel's ack."""
        self._seq += 1
        seq = self._seq
        self._sock.send(message(kind, flags | NLM_F_REQUEST, seq, body))
        out: list[bytes] = []
        while True:
            for mkind, mseq, mbody in messages(self._sock.recv(_RECV_BYTES)):
                if mseq != seq:
                    continue  # a notification or a late answer to an older request
                if mkind == NLMSG_DONE:
                    return out
                if mkind == NLMSG_ERROR:
                    (code,) = _ERRNO.unpack_from(mbody)
                    if code:
                        raise RtnlError(-code, os.strerror(-code))
                    return out
                out.append(mbody)
                if not flags & NLM_F_DUMP and not flags & NLM_F_ACK:
                    return out

    def links(self) -> list[Link]:
        return [parse_link(b) for b in self._request(RTM_GETLINK, NLM_F_DUMP, ifinfo())]

    def link(self, ifname: str) -> Link | None:
        try:
            bodies = self._request(RTM_GETLINK, 0, ifinfo() + attr(IFLA_IFNAME, _cstr(ifname)))
        except RtnlError as e:
            if e.errno == errno.ENODEV:
                return None
            raise
        return parse_link(bodies[0])

    def set_link(
        self,
        index: int,
        *,
        up: bool | None = None,
        ifname: str | None = None,
        mtu: int | None = None,
        netns_fd: int | None = None,
    ) -> None:
        """One RTM_NEWLINK: what is given changes together (a move and its new name in one message)."""
        body = ifinfo(index, up)
        if netns_fd is not None:
            body += attr(IFLA_NET_NS_FD, struct.pack("=I", netns_fd))
        if ifname is not None:
            body += attr(IFLA_IFNAME, _cstr(ifname))
        if mtu is not None:
            body += attr(IFLA_MTU, struct.pack("=I", mtu))
        self._request(RTM_NEWLINK, NLM_F_ACK, body)

    def add_address(self, index: int, cidr: str) -> None:
        net = ipaddress.ip_interface(cidr)
        family = socket.AF_INET if net.version == 4 else socket.AF_INET6
        body = _IFADDRMSG.pack(family, net.network.prefixlen, 0, 0, index)
        body += attr(IFA_LOCAL, net.ip.packed) + attr(IFA_ADDRESS, net.ip.packed)
        self._request(RTM_NEWADDR, NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL, body)
