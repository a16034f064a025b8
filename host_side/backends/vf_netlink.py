"""`VfNetlink` over pyroute2: reads and sets a VF's L2 settings through its PF (`ip link set PF vf N ...`).

The parsing of the kernel's VF info and the request we send are pure functions (unit-tested against
netlink bytes laid out as the kernel's uapi structs); `PyrouteVfNetlink` only moves them over the socket.
"""

from __future__ import annotations

import copy
import errno
import logging
import re
from typing import Any

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from contract.errors import HostSideError, InvalidRequest, NotFound, PreconditionFailed
from host_side.backends.base import VfRef, VfSettings

log = logging.getLogger(__name__)

# RTEXT_FILTER_VF: without it the kernel leaves IFLA_VFINFO_LIST out of RTM_GETLINK answers.
_RTEXT_FILTER_VF = 1
# The kernel reports spoofchk/trust as (u32)-1 when the PF driver cannot tell (linux/if_link.h users).
_NOT_REPORTED = 0xFFFFFFFF
# IFLA_VF_LINK_STATE_AUTO / _ENABLE / _DISABLE.
_LINK_STATES = ("auto", "enable", "disable")
_MAC_RE = re.compile(r"[0-9a-f]{2}(:[0-9a-f]{2}){5}")
_VLAN_MAX = 4094
_QOS_MAX = 7


def _flag(value: int) -> bool | None:
    return None if value == _NOT_REPORTED else bool(value)


def parse_vf_settings(link: Any, index: int, pf: str) -> VfSettings:
    """The settings of VF `index` in a decoded RTM_NEWLINK message of its PF (asked with RTEXT_FILTER_VF).

    Raises NotFound when the PF reports no such VF."""
    vflist = link.get_attr("IFLA_VFINFO_LIST")
    for info in vflist.get_attrs("IFLA_VF_INFO") if vflist is not None else ():
        mac = info.get_attr("IFLA_VF_MAC")
        if mac is None or mac["vf"] != index:
            continue
        vlan = info.get_attr("IFLA_VF_VLAN")
        rate = info.get_attr("IFLA_VF_RATE")
        spoofchk = info.get_attr("IFLA_VF_SPOOFCHK")
        trust = info.get_attr("IFLA_VF_TRUST")
        link_state = info.get_attr("IFLA_VF_LINK_STATE")
        state = link_state["link_state"] if link_state is not None else 0
        return VfSettings(
            mac=mac["mac"],
            vlan=vlan["vlan"] if vlan is not None else 0,
            qos=vlan["qos"] if vlan is not None else 0,
            spoofchk=_flag(spoofchk["spoofchk"]) if spoofchk is not None else None,
            trust=_flag(trust["trust"]) if trust is not None else None,
            min_tx_rate_mbps=rate["min_tx_rate"] if rate is not None else 0,
            max_tx_rate_mbps=rate["max_tx_rate"] if rate is not None else 0,
            link_state=_LINK_STATES[state] if state < len(_LINK_STATES) else "auto",
        )
    raise NotFound(
        f"PF {pf} reports no VF {index}: check sriov_numvfs of {pf} and rescan the inventory"
        if vflist is not None
        else f"{pf} reports no VFs at all: it is not an SR-IOV PF, or sriov_numvfs is 0"
    )


def check_settings(vf: VfRef, s: VfSettings) -> None:
    """Raises InvalidRequest naming the field when a setting cannot be applied to any VF."""
    where = f"VF {vf.index} of {vf.pf}"
    if not _MAC_RE.fullmatch(s.mac) or int(s.mac[:2], 16) & 1:
        raise InvalidRequest(f"{where}: MAC {s.mac!r} is not a unicast aa:bb:cc:dd:ee:ff address")
    if not 0 <= s.vlan <= _VLAN_MAX:
        raise InvalidRequest(f"{where}: VLAN {s.vlan} is outside 0..{_VLAN_MAX} (0 = untagged)")
    if not 0 <= s.qos <= _QOS_MAX:
        raise InvalidRequest(f"{where}: QoS {s.qos} is outside 0..{_QOS_MAX}")
    if s.min_tx_rate_mbps < 0 or s.max_tx_rate_mbps < 0:
        raise InvalidRequest(f"{where}: tx rates must be >= 0 Mbit/s")
    if s.max_tx_rate_mbps and s.min_tx_rate_mbps > s.max_tx_rate_mbps:
        raise InvalidRequest(f"{where}: min tx rate {s.min_tx_rate_mbps} exceeds max {s.max_tx_rate_mbps}")
    if s.link_state not in _LINK_STATES:
        raise InvalidRequest(f"{where}: link state {s.link_state!r} is not one of {', '.join(_LINK_STATES)}")


def vf_request(index: int, current: VfSettings, wanted: VfSettings) -> dict[str, Any]:
    """The pyroute2 `vf={...}` spec that turns `current` into `wanted`, naming only what changes.

    Sending only the changes keeps a PF driver that lacks e.g. rate limiting from failing a request
    that does not touch rates. spoofchk/trust None means "leave as it is"."""
    req: dict[str, Any] = {"vf": index}
    if wanted.mac != current.mac:
        req["mac"] = wanted.mac
    if (wanted.vlan, wanted.qos) != (current.vlan, current.qos):
        req["vlan"] = {"vlan": wanted.vlan, "qos": wanted.qos}
    if (wanted.min_tx_rate_mbps, wanted.max_tx_rate_mbps) != (
        current.min_tx_rate_mbps,
        current.max_tx_rate_mbps,
    ):
        req["rate"] = {"min_tx_rate": wanted.min_tx_rate_mbps, "max_tx_rate": wanted.max_tx_rate_mbps}
    if wanted.spoofchk is not None and wanted.spoofchk != current.spoofchk:
        req["spoofchk"] = int(wanted.spoofchk)
    if wanted.trust is not None and wanted.trust != current.trust:
        req["trust"] = int(wanted.trust)
    if wanted.link_state != current.link_state:
        req["link_state"] = _LINK_STATES.index(wanted.link_state)
    return req


def netlink_error(err: NetlinkError, action: str) -> HostSideError:
    """The host-side error for a failed netlink request, by errno; `action` names PF and VF."""
    code = err.code
    what = f"{action}: {errno.errorcode.get(code, str(code))} ({err})"
    if code in (errno.ENODEV, errno.ENOENT):
        return NotFound(f"{what}; the PF is gone: rescan the inventory")
    if code == errno.EOPNOTSUPP:
        return PreconditionFailed(
            f"{what}; the PF driver does not support this VF setting: drop it from the pool"
        )
    if code in (errno.EINVAL, errno.ERANGE):
        return InvalidRequest(f"{what}; the PF driver rejected the value")
    if code == errno.EBUSY:
        return PreconditionFailed(f"{what}; the VF is busy: retry after it is released")
    if code in (errno.EPERM, errno.EACCES):
        return HostSideError(f"{what}; needs CAP_NET_ADMIN: run vfhotplug-host as root")
    return HostSideError(f"{what}; see the PF driver's kernel log")


class PyrouteVfNetlink:
    """VF settings through the PF's netlink, in `netns` (a named netns) or the current one."""

    def __init__(self, netns: str | None = None) -> None:
        self._netns = netns

    def _ipr(self) -> IPRoute:
        return IPRoute(netns=self._netns) if self._netns else IPRoute()

    def _pf_index(self, ipr: IPRoute, pf: str) -> int:
        found = ipr.link_lookup(ifname=pf)
        if not found:
            where = f" in netns {self._netns}" if self._netns else ""
            raise NotFound(f"PF {pf} not found{where}: check the pool's PF names and rescan the inventory")
        return int(found[0])

    def _read(self, ipr: IPRoute, vf: VfRef) -> tuple[int, VfSettings]:
        ifindex = self._pf_index(ipr, vf.pf)
        try:
            (link,) = ipr.link("get", index=ifindex, ext_mask=_RTEXT_FILTER_VF)
        except NetlinkError as e:
            raise netlink_error(e, f"reading VF {vf.index} of {vf.pf}") from e
        return ifindex, parse_vf_settings(link, vf.index, vf.pf)

    def read_vf(self, vf: VfRef) -> VfSettings:
        with self._ipr() as ipr:
            return self._read(ipr, vf)[1]

    def apply_vf(self, vf: VfRef, settings: VfSettings) -> None:
        check_settings(vf, settings)
        with self._ipr() as ipr:
            ifindex, current = self._read(ipr, vf)
            req = vf_request(vf.index, current, settings)
            if len(req) == 1:
                log.debug("VF %d of %s (%s) already has %s", vf.index, vf.pf, vf.pci, settings)
                return
            # pyroute2 consumes the spec it is given (pops keys), so it gets a copy of what we log.
            change = repr(req)
            try:
                ipr.link("set", index=ifindex, vf=copy.deepcopy(req))
            except NetlinkError as e:
                raise netlink_error(e, f"setting {change} on VF {vf.index} ({vf.pci}) of {vf.pf}") from e
        log.info("VF %d of %s (%s): set %s", vf.index, vf.pf, vf.pci, change)
