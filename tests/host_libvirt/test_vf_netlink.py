"""VF netlink: parsing the kernel's VF info, the request we send, errno mapping; real netlink where possible.

There is no SR-IOV NIC on these machines: the VF info is built byte by byte as the kernel lays it out
(linux/if_link.h structs) and decoded by pyroute2, and the real-netlink tests cover a PF without VFs and a
missing PF in a netns of their own. Setting real VFs is checked in the lab (QEMU's emulated igb).
"""

from __future__ import annotations

import errno
import os
import socket
import struct
import uuid
from collections.abc import Iterator
from dataclasses import replace

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pyroute2 import IPRoute, netns
from pyroute2.netlink.exceptions import NetlinkError
from pyroute2.netlink.rtnl.ifinfmsg import ifinfmsg

from contract.errors import HostSideError, InvalidRequest, NotFound, PreconditionFailed
from contract.pci import PciAddress
from host_side.backends.base import VfRef, VfSettings
from host_side.backends.vf_netlink import (
    PyrouteVfNetlink,
    check_settings,
    netlink_error,
    parse_vf_settings,
    vf_request,
)

RTM_NEWLINK = 16
IFLA_IFNAME = 3
IFLA_VFINFO_LIST = 22
IFLA_VF_INFO = 1
IFLA_VF_MAC, IFLA_VF_VLAN, IFLA_VF_TX_RATE, IFLA_VF_SPOOFCHK, IFLA_VF_LINK_STATE, IFLA_VF_RATE = (
    1,
    2,
    3,
    4,
    5,
    6,
)
IFLA_VF_TRUST = 9
NOT_REPORTED = 0xFFFFFFFF


def _nla(kind: int, payload: bytes) -> bytes:
    size = 4 + len(payload)
    return struct.pack("=HH", size, kind) + payload + b"\0" * (-size % 4)


def _vf_info(
    vf: int, mac: str, vlan: int, qos: int, spoofchk: int, link_state: int, rates: tuple[int, int], trust: int
) -> bytes:
    mac_bytes = bytes(int(x, 16) for x in mac.split(":"))
    return _nla(
        IFLA_VF_INFO,
        _nla(IFLA_VF_MAC, struct.pack("=I32s", vf, mac_bytes))
        + _nla(IFLA_VF_VLAN, struct.pack("=III", vf, vlan, qos))
        + _nla(IFLA_VF_TX_RATE, struct.pack("=II", vf, rates[1]))
        + _nla(IFLA_VF_SPOOFCHK, struct.pack("=II", vf, spoofchk))
        + _nla(IFLA_VF_LINK_STATE, struct.pack("=II", vf, link_state))
        + _nla(IFLA_VF_RATE, struct.pack("=III", vf, *rates))
        + _nla(IFLA_VF_TRUST, struct.pack("=II", vf, trust)),
    )


def _newlink(*vf_infos: bytes) -> ifinfmsg:
    """An RTM_NEWLINK of PF enp59s0f0 (ifindex 4) as the kernel answers RTM_GETLINK with RTEXT_FILTER_VF."""
    attrs = _nla(IFLA_IFNAME, b"enp59s0f0\0")
    if vf_infos:
        attrs += _nla(IFLA_VFINFO_LIST, b"".join(vf_infos))
    body = struct.pack("=BxHiII", socket.AF_UNSPEC, 1, 4, 0, 0) + attrs
    data = struct.pack("=IHHII", 16 + len(body), RTM_NEWLINK, 0, 1, 0) + body
    msg = ifinfmsg(data)
    msg.decode()
    return msg


TWO_VFS = _newlink(
    _vf_info(0, "52:54:00:aa:00:01", 42, 3, 1, 0, (0, 1000), 0),
    # A driver that cannot report spoof check or trust sends (u32)-1.
    _vf_info(1, "9a:0b:4e:11:22:33", 0, 0, NOT_REPORTED, 2, (10, 500), NOT_REPORTED),
)
VF0 = VfRef("enp59s0f0", PciAddress.parse("0000:3b:00.0"), 0, PciAddress.parse("0000:3b:10.0"))


def test_parse_vf_settings_from_kernel_layout() -> None:
    assert parse_vf_settings(TWO_VFS, 0, "enp59s0f0") == VfSettings(
        mac="52:54:00:aa:00:01",
        vlan=42,
        qos=3,
        spoofchk=True,
        trust=False,
        min_tx_rate_mbps=0,
        max_tx_rate_mbps=1000,
        link_state="auto",
    )
    assert parse_vf_settings(TWO_VFS, 1, "enp59s0f0") == VfSettings(
        mac="9a:0b:4e:11:22:33",
        spoofchk=None,
        trust=None,
        min_tx_rate_mbps=10,
        max_tx_rate_mbps=500,
        link_state="disable",
    )


def test_parse_missing_vf_names_sriov_numvfs() -> None:
    with pytest.raises(NotFound, match="no VF 5: check sriov_numvfs of enp59s0f0"):
        parse_vf_settings(TWO_VFS, 5, "enp59s0f0")


def test_parse_link_without_vfs_says_not_a_pf() -> None:
    with pytest.raises(NotFound, match="not an SR-IOV PF"):
        parse_vf_settings(_newlink(), 0, "enp59s0f0")


CURRENT = VfSettings(
    mac="52:54:00:aa:00:01", vlan=42, qos=3, spoofchk=True, trust=False, max_tx_rate_mbps=1000
)


def test_request_for_unchanged_settings_names_only_the_vf() -> None:
    assert vf_request(3, CURRENT, CURRENT) == {"vf": 3}


def test_request_names_every_changed_field() -> None:
    wanted = VfSettings(mac="52:54:00:aa:00:02", vlan=7, spoofchk=False, trust=True, link_state="enable")
    assert vf_request(3, CURRENT, wanted) == {
        "vf": 3,
        "mac": "52:54:00:aa:00:02",
        "vlan": {"vlan": 7, "qos": 0},
        "rate": {"min_tx_rate": 0, "max_tx_rate": 0},
        "spoofchk": 0,
        "trust": 1,
        "link_state": 1,
    }


def test_request_keys_are_vf_attributes_pyroute2_encodes() -> None:
    wanted = VfSettings(mac="52:54:00:aa:00:02", spoofchk=False, trust=True, link_state="disable")
    simple = set(vf_request(0, CURRENT, wanted)) - {"vf", "vlan", "rate"}
    known = {name for name, _ in ifinfmsg.vflist.vfinfo.nla_map}
    assert {ifinfmsg.vflist.vfinfo.name2nla(key) for key in simple} <= known


macs = st.sampled_from(["52:54:00:aa:00:01", "52:54:00:aa:00:02", "9a:0b:4e:11:22:33"])
settings = st.builds(
    VfSettings,
    mac=macs,
    vlan=st.integers(0, 4094),
    qos=st.integers(0, 7),
    spoofchk=st.none() | st.booleans(),
    trust=st.none() | st.booleans(),
    min_tx_rate_mbps=st.integers(0, 100),
    max_tx_rate_mbps=st.integers(0, 10000),
    link_state=st.sampled_from(["auto", "enable", "disable"]),
)


def _kernel_applies(current: VfSettings, req: dict[str, object]) -> VfSettings:
    """What the PF holds after the request: a model of do_setvfinfo for the fields we send."""
    out = current
    if isinstance(mac := req.get("mac"), str):
        out = replace(out, mac=mac)
    if isinstance(vlan := req.get("vlan"), dict):
        out = replace(out, vlan=vlan["vlan"], qos=vlan["qos"])
    if isinstance(rate := req.get("rate"), dict):
        out = replace(out, min_tx_rate_mbps=rate["min_tx_rate"], max_tx_rate_mbps=rate["max_tx_rate"])
    if "spoofchk" in req:
        out = replace(out, spoofchk=bool(req["spoofchk"]))
    if "trust" in req:
        out = replace(out, trust=bool(req["trust"]))
    if isinstance(state := req.get("link_state"), int):
        out = replace(out, link_state=("auto", "enable", "disable")[state])
    return out


@given(current=settings, wanted=settings)
def test_request_turns_current_into_wanted(current: VfSettings, wanted: VfSettings) -> None:
    got = _kernel_applies(current, vf_request(0, current, wanted))
    expect = replace(
        wanted,
        spoofchk=current.spoofchk if wanted.spoofchk is None else wanted.spoofchk,
        trust=current.trust if wanted.trust is None else wanted.trust,
    )
    assert got == expect


@pytest.mark.parametrize(
    ("bad", "field"),
    [
        (VfSettings(mac="01:00:5e:00:00:01"), "MAC"),
        (VfSettings(mac="52-54-00-aa-00-01"), "MAC"),
        (VfSettings(mac="52:54:00:aa:00:01", vlan=4095), "VLAN 4095"),
        (VfSettings(mac="52:54:00:aa:00:01", qos=8), "QoS 8"),
        (VfSettings(mac="52:54:00:aa:00:01", min_tx_rate_mbps=20, max_tx_rate_mbps=10), "min tx rate"),
        (VfSettings(mac="52:54:00:aa:00:01", max_tx_rate_mbps=-1), "tx rates"),
        (VfSettings(mac="52:54:00:aa:00:01", link_state="up"), "link state"),
    ],
)
def test_check_settings_names_the_bad_field(bad: VfSettings, field: str) -> None:
    with pytest.raises(InvalidRequest, match=f"VF 0 of enp59s0f0: {field}"):
        check_settings(VF0, bad)


@pytest.mark.parametrize(
    ("code", "cls"),
    [
        (errno.ENODEV, NotFound),
        (errno.EOPNOTSUPP, PreconditionFailed),
        (errno.EINVAL, InvalidRequest),
        (errno.EBUSY, PreconditionFailed),
        (errno.EPERM, HostSideError),
        (errno.EIO, HostSideError),
    ],
)
def test_netlink_errno_mapping(code: int, cls: type[HostSideError]) -> None:
    err = netlink_error(NetlinkError(code, os.strerror(code)), "setting mac on VF 0 of enp59s0f0")
    assert type(err) is cls
    assert str(err).startswith(f"setting mac on VF 0 of enp59s0f0: {errno.errorcode[code]}")


# -- real netlink, in a netns of the test's own -------------------------------------------------------

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root to create a network namespace")


@pytest.fixture
def pf_netns() -> Iterator[str]:
    """A fresh netns holding a veth pair whose end "pf0" stands for a PF with no VFs."""
    name = f"vfhp-vf-{uuid.uuid4().hex[:8]}"
    netns.create(name)
    try:
        with IPRoute(netns=name) as ipr:
            ipr.link("add", ifname="pf0", kind="veth", peer="pf0-peer")
        yield name
    finally:
        netns.remove(name)


@needs_root
def test_real_link_without_vfs(pf_netns: str) -> None:
    with pytest.raises(NotFound, match="pf0 reports no VFs at all"):
        PyrouteVfNetlink(netns=pf_netns).read_vf(replace(VF0, pf="pf0"))


@needs_root
def test_real_missing_pf(pf_netns: str) -> None:
    with pytest.raises(NotFound, match=f"PF enp59s0f0 not found in netns {pf_netns}"):
        PyrouteVfNetlink(netns=pf_netns).read_vf(VF0)


@needs_root
def test_real_apply_checks_input_before_netlink(pf_netns: str) -> None:
    with pytest.raises(InvalidRequest, match="VLAN 5000"):
        PyrouteVfNetlink(netns=pf_netns).apply_vf(VF0, VfSettings(mac="52:54:00:aa:00:01", vlan=5000))
