"""A DPDK app inside a dpdk-mode pod drives its hot-plugged device through vfio, bypassing the guest kernel;
QEMU dumps what leaves that NIC on the host side, so the host sees the app's frames.

The test image is busybox, so the app (Debian's dpdk-testpmd, installed on this machine by
testbed/dpdk/setup.sh) comes into the container from the guest's /usr (this machine's, over 9p) through
read-only CRI mounts. It needs CAP_IPC_LOCK to pin its DMA memory for the IOMMU; the vfio nodes and
hugepages are what vfhotplug-nri gives every dpdk-mode container.
"""

from __future__ import annotations

import json
import re
import struct
from pathlib import Path
from types import TracebackType

import libvirt
import libvirt_qemu  # type: ignore[import-untyped]

# Debian 12 has a merged /usr: /lib and /lib64 are usr/lib and usr/lib64.
APP_MOUNTS = {"/usr": "/usr", "/lib": "/usr/lib", "/lib64": "/usr/lib64"}
APP_CAPABILITIES = ["IPC_LOCK"]
_PCAP_HEADER, _RECORD_HEADER = 24, 16


def txonly_argv(guest_pci: str, seconds: int) -> list[str]:
    """testpmd sending 64-byte frames from the port's own MAC for `seconds`, then exiting on SIGINT."""
    return [
        "timeout", "-s", "INT", str(seconds),
        "/usr/bin/dpdk-testpmd", "-l", "0-1", "-n", "1", "-a", guest_pci, "--file-prefix", "vfhp",
        "--", "--forward-mode=txonly", "--tx-first", "--stats-period", "1", "--total-num-mbufs", "2048",
    ]  # fmt: skip


def sent_by_testpmd(output: str) -> int | None:
    """The TX-packets of testpmd's last (accumulated) forward statistics, None if it printed none."""
    totals = re.findall(r"TX-packets: (\d+)", output)
    return int(totals[-1]) if totals else None


def frames_from(pcap: bytes, src_mac: str) -> int:
    """How many frames of a pcap file (QEMU filter-dump: little-endian, Ethernet) come from `src_mac`."""
    if len(pcap) < _PCAP_HEADER or pcap[:4] != b"\xd4\xc3\xb2\xa1":
        raise ValueError("not a little-endian pcap file")
    src = bytes.fromhex(src_mac.replace(":", ""))
    count, pos = 0, _PCAP_HEADER
    while pos + _RECORD_HEADER <= len(pcap):
        (caplen,) = struct.unpack_from("<I", pcap, pos + 8)
        frame = pcap[pos + _RECORD_HEADER : pos + _RECORD_HEADER + caplen]
        count += frame[6:12] == src
        pos += _RECORD_HEADER + caplen
    return count


class HostPacketDump:
    """A QEMU filter-dump on the host side of one hot-plugged NIC (libvirt names its netdev host<alias>),
    added and removed through the QEMU monitor of the lab's libvirtd."""

    def __init__(self, uri: str, domain: str, alias: str, pcap: Path) -> None:
        self._conn = libvirt.open(uri)
        self._dom = self._conn.lookupByName(domain)
        self._netdev = f"host{alias}"
        self.pcap = pcap
        self._id = f"labdump-{alias}"

    def _qmp(self, command: str, **arguments: str) -> None:
        libvirt_qemu.qemuMonitorCommand(
            self._dom, json.dumps({"execute": command, "arguments": arguments}), 0
        )

    def __enter__(self) -> HostPacketDump:
        self.pcap.unlink(missing_ok=True)
        self._qmp(
            "object-add",
            **{"qom-type": "filter-dump", "id": self._id, "netdev": self._netdev, "file": str(self.pcap)},
        )
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        try:
            self._qmp("object-del", id=self._id)
        finally:
            self._conn.close()
