"""Netlink in the guest: find netdevs by MAC, move them into a pod's netns and back, and wait for link
events. Constructed with the netns the VFs appear in (None: this process's netns). The messages are
`vm_side.rtnetlink`'s; every call opens its own socket (microseconds), so threads never share one."""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import select
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from vm_side.rtnetlink import RTMGRP_LINK, Rtnl, RtnlError

log = logging.getLogger(__name__)

_NETNS_RUN_DIR = Path("/var/run/netns")  # where `ip netns` keeps named namespaces


class LinkError(OSError):
    """A netlink operation failed; the message names the netdev and netns."""


@dataclass(frozen=True)
class MovedLink:
    ifname: str
    index: int


def _netns_path(netns: str) -> str:
    return netns if "/" in netns else str(_NETNS_RUN_DIR / netns)


class LinkEvents:
    """Link notifications of one netns; `wait` returns early when any link changed."""

    def __init__(self, rtnl: Rtnl) -> None:
        self._rtnl = rtnl

    def wait(self, timeout_s: float) -> bool:
        ready, _, _ = select.select([self._rtnl.fileno()], [], [], max(timeout_s, 0.0))
        if ready:
            self._rtnl.drain()  # the caller re-reads sysfs and netlink state anyway
        return bool(ready)


class GuestNetlink:
    def __init__(self, netns: str | None = None) -> None:
        self.netns = netns

    def _rtnl(self, netns: str | None = None, groups: int = 0) -> Rtnl:
        """A socket in `netns` (default: home). A missing netns raises FileNotFoundError, never creates one."""
        target = netns if netns is not None else self.netns
        return Rtnl(_netns_path(target) if target is not None else None, groups)

    @contextlib.contextmanager
    def events(self) -> Iterator[LinkEvents]:
        """Subscribe to link events in the home netns; arm it before checking state, or an event is lost."""
        with self._rtnl(groups=RTMGRP_LINK) as rtnl:
            yield LinkEvents(rtnl)

    def mac_of(self, ifname: str, netns: str | None = None) -> str | None:
        with self._rtnl(netns) as rtnl:
            link = rtnl.link(ifname)
            return link.mac if link is not None else None

    def link_names(self, netns: str) -> frozenset[str]:
        """The netdev names in `netns` (a pod's, before any VF moves in: the CNI's eth0, lo, ...).

        Raises:
            LinkError: the netns cannot be opened or read.
        """
        try:
            with self._rtnl(netns) as rtnl:
                return frozenset(link.ifname for link in rtnl.links())
        except RtnlError as e:
            raise LinkError(e.errno, f"netdevs of netns {netns}: {e.strerror}") from e
        except OSError as e:
            raise LinkError(e.errno or errno.EIO, f"netns {netns} cannot be opened: {e.strerror}") from e

    def find_by_mac(self, mac: str, netns: str | None = None) -> str | None:
        """The name of the netdev with this MAC in `netns` (default: home), None when there is none."""
        with self._rtnl(netns) as rtnl:
            return next((link.ifname for link in rtnl.links() if link.mac == mac.lower()), None)

    def move_into_pod(
        self, ifname: str, pod_netns: str, new_name: str, mtu: int | None, cidr: str | None
    ) -> MovedLink:
        """Move a home-netns netdev into the pod's netns under `new_name`, set MTU and address, bring it up.

        Raises:
            LinkError: the netdev is missing, the name is taken in the pod, or the kernel refused a step.
        """
        where = f"netdev {ifname} -> {new_name} in {pod_netns}"
        try:
            # The pod's socket first: a vanished netns fails before the netdev leaves home.
            with self._rtnl(pod_netns) as pod, self._rtnl() as home:
                link = home.link(ifname)
                if link is None:
                    raise LinkError(errno.ENODEV, f"{where}: {ifname} is not in the guest's netns")
                if link.up:
                    home.set_link(link.index, up=False)
                fd = os.open(_netns_path(pod_netns), os.O_RDONLY | os.O_CLOEXEC)
                try:
                    # One message moves and renames, so a clash with the pod's names cannot strand it.
                    home.set_link(link.index, netns_fd=fd, ifname=new_name)
                finally:
                    os.close(fd)
                moved = pod.link(new_name)
                if moved is None or moved.mac != link.mac:
                    raise LinkError(errno.EEXIST, f"{where}: not found under {new_name} after the move")
                if mtu is not None:
                    pod.set_link(moved.index, mtu=mtu)
                if cidr is not None:
                    pod.add_address(moved.index, cidr)
                pod.set_link(moved.index, up=True)
                return MovedLink(new_name, moved.index)
        except RtnlError as e:
            raise LinkError(e.errno, f"{where}: {e.strerror}") from e
        except FileNotFoundError as e:
            raise LinkError(errno.ENOENT, f"{where}: pod netns is gone") from e

    def move_home(self, mac: str, pod_netns: str, original_name: str) -> str | None:
        """Bring the netdev with `mac` back from the pod under its original name.

        Tolerates a pod netns that is already gone (a physical netdev then returns to the root netns by
        itself; a virtual one is destroyed with the netns) and a netdev already back home. Returns the
        netdev's name at home, None when it exists nowhere.
        """
        mac = mac.lower()
        try:
            try:
                with self._rtnl(pod_netns) as pod:
                    link = next((x for x in pod.links() if x.mac == mac), None)
                    if link is not None:
                        self._send_home(pod, link.index, original_name)
            except FileNotFoundError:
                log.info("pod netns %s is gone; looking for netdev %s at home", pod_netns, mac)
            with self._rtnl() as home:
                link = next((x for x in home.links() if x.mac == mac), None)
                if link is None:
                    return None
                if link.ifname != original_name and home.link(original_name) is None:
                    home.set_link(link.index, up=False)
                    home.set_link(link.index, ifname=original_name)
                    return original_name
                return link.ifname
        except RtnlError as e:
            raise LinkError(e.errno, f"netdev {mac} back from {pod_netns}: {e.strerror}") from e

    def _send_home(self, pod: Rtnl, index: int, original_name: str) -> None:
        pod.set_link(index, up=False)
        home = _netns_path(self.netns) if self.netns is not None else "/proc/self/ns/net"
        fd = os.open(home, os.O_RDONLY | os.O_CLOEXEC)
        try:
            pod.set_link(index, netns_fd=fd, ifname=original_name)
        except RtnlError as e:
            if e.errno != errno.EEXIST:
                raise
            # The original name is taken at home: move it under a kernel-chosen name instead.
            log.warning(
                "netdev name %s taken in the guest netns; it returns under a kernel name", original_name
            )
            pod.set_link(index, netns_fd=fd, ifname="vfhp%d")
        finally:
            os.close(fd)
