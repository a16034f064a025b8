"""Netlink (pyroute2) in the guest: find netdevs by MAC, move them into a pod's netns and back, and wait
for link events. Constructed with the netns the VFs appear in (None: this process's netns)."""

from __future__ import annotations

import contextlib
import errno
import ipaddress
import logging
import os
import select
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

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

    def __init__(self, ipr: IPRoute) -> None:
        self._ipr = ipr

    def wait(self, timeout_s: float) -> bool:
        ready, _, _ = select.select([self._ipr.fileno()], [], [], max(timeout_s, 0.0))
        if ready:
            self._ipr.get()  # drain; the caller re-reads sysfs and netlink state anyway
        return bool(ready)


class GuestNetlink:
    def __init__(self, netns: str | None = None) -> None:
        self.netns = netns

    def _ipr(self, netns: str | None = None) -> IPRoute:
        target = netns if netns is not None else self.netns
        # flags=0: a missing netns is an error; pyroute2's default (O_CREAT) would create an empty one.
        return IPRoute(netns=_netns_path(target), flags=0) if target is not None else IPRoute()

    @contextlib.contextmanager
    def events(self) -> Iterator[LinkEvents]:
        """Subscribe to link events in the home netns; arm it before checking state, or an event is lost."""
        with self._ipr() as ipr:
            ipr.bind()
            yield LinkEvents(ipr)

    def mac_of(self, ifname: str, netns: str | None = None) -> str | None:
        with self._ipr(netns) as ipr:
            idx = ipr.link_lookup(ifname=ifname)
            if not idx:
                return None
            return str(ipr.get_links(idx[0])[0].get("address"))

    def link_names(self, netns: str) -> frozenset[str]:
        """The netdev names in `netns` (a pod's, before any VF moves in: the CNI's eth0, lo, ...).

        Raises:
            LinkError: the netns cannot be opened or read.
        """
        try:
            with self._ipr(netns) as ipr:
                return frozenset(str(link.get("ifname")) for link in ipr.get_links())
        except NetlinkError as e:
            raise LinkError(e.code, f"netdevs of netns {netns}: {os.strerror(e.code)}") from e
        except OSError as e:
            raise LinkError(e.errno or errno.EIO, f"netns {netns} cannot be opened: {e.strerror}") from e

    def find_by_mac(self, mac: str, netns: str | None = None) -> str | None:
        """The name of the netdev with this MAC in `netns` (default: home), None when there is none."""
        with self._ipr(netns) as ipr:
            for link in ipr.get_links():
                if str(link.get("address")).lower() == mac.lower():
                    return str(link.get("ifname"))
        return None

    def move_into_pod(
        self, ifname: str, pod_netns: str, new_name: str, mtu: int | None, cidr: str | None
    ) -> MovedLink:
        """Move a home-netns netdev into the pod's netns under `new_name`, set MTU and address, bring it up.

        Raises:
            LinkError: the netdev is missing, the name is taken in the pod, or the kernel refused a step.
        """
        where = f"netdev {ifname} -> {new_name} in {pod_netns}"
        try:
            with self._ipr() as ipr:
                idx = ipr.link_lookup(ifname=ifname)
                if not idx:
                    raise LinkError(errno.ENODEV, f"{where}: {ifname} is not in the guest's netns")
                mac = str(ipr.get_links(idx[0])[0].get("address"))
                ipr.link("set", index=idx[0], state="down")
                fd = os.open(_netns_path(pod_netns), os.O_RDONLY)
                try:
                    # One message moves and renames, so a clash with the pod's names cannot strand it.
                    ipr.link("set", index=idx[0], net_ns_fd=fd, ifname=new_name)
                finally:
                    os.close(fd)
            with self._ipr(pod_netns) as pod:
                found = [link for link in pod.get_links() if str(link.get("address")).lower() == mac]
                if not found or found[0].get("ifname") != new_name:
                    raise LinkError(errno.EEXIST, f"{where}: not found under {new_name} after the move")
                pidx = found[0]["index"]
                if mtu is not None:
                    pod.link("set", index=pidx, mtu=mtu)
                if cidr is not None:
                    net = ipaddress.ip_interface(cidr)
                    pod.addr("add", index=pidx, address=str(net.ip), prefixlen=net.network.prefixlen)
                pod.link("set", index=pidx, state="up")
                return MovedLink(new_name, int(pidx))
        except NetlinkError as e:
            raise LinkError(e.code, f"{where}: {os.strerror(e.code)}") from e
        except FileNotFoundError as e:
            raise LinkError(errno.ENOENT, f"{where}: pod netns is gone") from e

    def move_home(self, mac: str, pod_netns: str, original_name: str) -> str | None:
        """Bring the netdev with `mac` back from the pod under its original name.

        Tolerates a pod netns that is already gone (a physical netdev then returns to the root netns by
        itself; a virtual one is destroyed with the netns) and a netdev already back home. Returns the
        netdev's name at home, None when it exists nowhere.
        """
        try:
            try:
                with self._ipr(pod_netns) as pod:
                    for link in pod.get_links():
                        if str(link.get("address")).lower() == mac.lower():
                            self._send_home(pod, int(link["index"]), original_name)
                            break
            except FileNotFoundError:
                log.info("pod netns %s is gone; looking for netdev %s at home", pod_netns, mac)
            with self._ipr() as ipr:
                for link in ipr.get_links():
                    if str(link.get("address")).lower() != mac.lower():
                        continue
                    name = str(link.get("ifname"))
                    if name != original_name and not ipr.link_lookup(ifname=original_name):
                        ipr.link("set", index=link["index"], state="down")
                        ipr.link("set", index=link["index"], ifname=original_name)
                        name = original_name
                    return name
            return None
        except NetlinkError as e:
            raise LinkError(e.code, f"netdev {mac} back from {pod_netns}: {os.strerror(e.code)}") from e

    def _send_home(self, pod: IPRoute, index: int, original_name: str) -> None:
        pod.link("set", index=index, state="down")
        home = _netns_path(self.netns) if self.netns is not None else "/proc/self/ns/net"
        fd = os.open(home, os.O_RDONLY)
        try:
            pod.link("set", index=index, net_ns_fd=fd, ifname=original_name)
        except NetlinkError as e:
            if e.code != errno.EEXIST:
                raise
            # The original name is taken at home: move it under a kernel-chosen name instead.
            log.warning(
                "netdev name %s taken in the guest netns; it returns under a kernel name", original_name
            )
            pod.link("set", index=index, net_ns_fd=fd, ifname="vfhp%d")
        finally:
            os.close(fd)
