"""vm_side.rtnetlink: message layout against linux/rtnetlink.h (pure), and sockets in real network
namespaces checked with `ip -j` as the oracle (root)."""

from __future__ import annotations

import errno
import os
import select
import struct
import subprocess
import threading

import pytest

from tests.pod.conftest import ip_json, links, needs_root
from vm_side import rtnetlink as rt


def test_attr_pads_to_four_bytes_and_reads_back() -> None:
    raw = rt.attr(rt.IFLA_IFNAME, b"net1\0") + rt.attr(rt.IFLA_MTU, struct.pack("=I", 1400))
    assert raw[:4] == struct.pack("=HH", 9, rt.IFLA_IFNAME)  # length counts the header, not the padding
    assert len(raw) == 12 + 8
    assert rt.attrs(raw) == {rt.IFLA_IFNAME: b"net1\0", rt.IFLA_MTU: struct.pack("=I", 1400)}


def test_link_message_decodes_index_name_mac_and_state() -> None:
    body = struct.pack("=BxHiII", 0, 1, 7, rt.IFF_UP, 0)
    body += rt.attr(rt.IFLA_IFNAME, b"eth0\0") + rt.attr(rt.IFLA_ADDRESS, bytes.fromhex("02AB00000001"))
    [(kind, seq, got)] = list(rt.messages(rt.message(rt.RTM_NEWLINK, 0, 5, body)))
    assert (kind, seq) == (rt.RTM_NEWLINK, 5)
    assert rt.parse_link(got) == rt.Link(7, "eth0", "02:ab:00:00:00:01", up=True)


def test_ifinfo_changes_only_the_up_flag_when_asked() -> None:
    assert struct.unpack("=BxHiII", rt.ifinfo(3))[3:] == (0, 0)
    assert struct.unpack("=BxHiII", rt.ifinfo(3, up=True))[3:] == (rt.IFF_UP, rt.IFF_UP)
    assert struct.unpack("=BxHiII", rt.ifinfo(3, up=False))[3:] == (0, rt.IFF_UP)


def test_a_truncated_header_is_an_error_not_a_loop() -> None:
    with pytest.raises(rt.RtnlError):
        list(rt.messages(struct.pack("=IHHII", 4, 0, 0, 0, 0)))


@needs_root
def test_socket_in_a_netns_sees_that_netns_and_leaves_ours_alone(make_netns) -> None:
    pod = make_netns()
    subprocess.run(
        ["ip", "-n", os.path.basename(pod), "link", "add", "vfa", "type", "veth", "peer", "vfb"], check=True
    )
    before = os.readlink(f"/proc/self/task/{threading.get_native_id()}/ns/net")
    oracle = sorted(str(x["ifname"]) for x in ip_json(pod, "link", "show"))
    with rt.Rtnl(pod) as rtnl:
        names = sorted(link.ifname for link in rtnl.links())
        vfa = rtnl.link("vfa")
        assert vfa is not None
        rtnl.set_link(vfa.index, mtu=1300, ifname="net1")
        rtnl.add_address(vfa.index, "10.7.0.2/24")
        rtnl.add_address(vfa.index, "fd00::2/64")
        rtnl.set_link(vfa.index, up=True)
        assert rtnl.link("vfa") is None
    assert names == oracle == ["lo", "vfa", "vfb"]
    assert os.readlink(f"/proc/self/task/{threading.get_native_id()}/ns/net") == before
    net1 = links(pod)["net1"]
    assert (net1["mtu"], "UP" in net1["flags"]) == (1300, True)
    assert {(a["local"], a["prefixlen"]) for a in net1["addr_info"]} >= {("10.7.0.2", 24), ("fd00::2", 64)}


@needs_root
def test_kernel_refusals_carry_its_errno(make_netns) -> None:
    with rt.Rtnl(make_netns()) as rtnl:
        lo = rtnl.link("lo")
        assert lo is not None
        with pytest.raises(rt.RtnlError) as e:
            rtnl.set_link(lo.index + 1000, up=True)
        assert e.value.errno == errno.ENODEV


def test_a_missing_netns_is_file_not_found_and_creates_nothing(tmp_path) -> None:
    with pytest.raises(FileNotFoundError):
        rt.Rtnl(str(tmp_path / "gone"))
    assert not (tmp_path / "gone").exists()


@needs_root
def test_events_socket_wakes_on_a_link_change_and_drains(make_netns) -> None:
    netns = make_netns()
    with rt.Rtnl(netns, groups=rt.RTMGRP_LINK) as events:
        assert select.select([events], [], [], 0)[0] == []
        subprocess.run(["ip", "-n", os.path.basename(netns), "link", "set", "lo", "up"], check=True)
        assert select.select([events], [], [], 5)[0] == [events]
        events.drain()
        assert select.select([events], [], [], 0)[0] == []
