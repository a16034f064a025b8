"""What the PodLifecycle tests share: deadlines, the leak check, a recording datapath step."""

import json
import time
from collections.abc import Mapping
from pathlib import Path

from tests.pod.conftest import Guest, links
from vm_side.demand import Mode
from vm_side.pod_record import PodRecord

KERNEL_2 = json.dumps(
    [
        {"ifname": "net1", "ip": "10.1.0.2/24", "mtu": 1400},
        {"ifname": "net2", "ip": "10.2.0.2/24", "mtu": 1400},
    ]
)


def soon(seconds: float = 10.0) -> float:
    return time.monotonic() + seconds


def vf_netdevs(netns: str) -> list[str]:
    """Every simulated VF netdev left in a netns (the sim gives them MACs 02:fe:...)."""
    return sorted(n for n, link in links(netns).items() if link.get("address", "").startswith("02:fe:"))


def assert_clean(guest: Guest, *netns: str) -> None:
    # A failure close to the deadline rolls back in the background: give that a moment.
    end = time.monotonic() + 5
    while (guest.host.leases or guest.lifecycle().store.all()) and time.monotonic() < end:
        time.sleep(0.05)
    assert guest.host.leases == {}
    assert guest.backend.live_devices("vm1") == {}
    assert guest.lifecycle().store.all() == []
    for ns in (guest.netns, *netns):
        if Path(ns).exists():
            assert vf_netdevs(ns) == []


class RecordingStep:
    """A datapath step stand-in that records apply/undo and can fail."""

    name = "recording"

    def __init__(self, fail: bool = False) -> None:
        self.fail = fail
        self.undone: list[Mapping[str, str]] = []

    def handles(self, mode: Mode) -> bool:
        return mode is Mode.KERNEL

    def apply(self, rec: PodRecord, deadline: float) -> dict[str, str]:
        if self.fail:
            raise RuntimeError("datapath refused")
        return {"ifnames": ",".join(vf.slot.ifname for vf in rec.vfs)}

    def undo(self, rec: PodRecord, notes: Mapping[str, str]) -> None:
        self.undone.append(dict(notes))
