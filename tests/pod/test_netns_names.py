"""A pod asking for an interface name its netns already has (the CNI's eth0) is refused before the host
is called; generated names step around the pod's own. Real netns, FakeHost over the veth SimBackend."""

import json
import subprocess
import time
from pathlib import Path

import pytest

from tests.pod.conftest import Guest, links, needs_root
from vm_side.demand import ANNOTATION
from vm_side.lifecycle import PodError

pytestmark = needs_root


def soon(seconds: float = 10.0) -> float:
    return time.monotonic() + seconds


def cni_veth(pod: str, name: str, peer: str) -> None:
    """What the test bed's CNI does: a veth pair inside the pod's netns."""
    subprocess.run(
        ["ip", "-n", Path(pod).name, "link", "add", name, "type", "veth", "peer", "name", peer], check=True
    )


@pytest.mark.parametrize("taken", ["eth0", "cnipeer0"])
def test_ifname_present_in_the_pod_netns_is_refused_before_the_host_call(guest: Guest, make_netns, taken):
    pod = make_netns()
    cni_veth(pod, "eth0", "cnipeer0")
    life = guest.lifecycle()
    ann = {ANNOTATION: json.dumps([{"count": 1}, {"ifname": taken}])}
    with pytest.raises(PodError) as err:
        life.prepare("u1", "pod-1", pod, ann, soon())
    msg = str(err.value)
    assert f"bad demand: {ANNOTATION} request 1 field 'ifname': '{taken}' already exists" in msg, msg
    assert "cnipeer0, eth0, lo" in msg  # what the netns has, so the user can pick another
    assert guest.host.calls == [] and guest.host.leases == {}
    assert life.store.all() == [] and life.store.attempt_uids() == []
    assert sorted(links(pod)) == ["cnipeer0", "eth0", "lo"]


def test_generated_names_skip_the_names_the_pod_netns_has(guest: Guest, make_netns):
    pod = make_netns()
    cni_veth(pod, "net1", "eth0")  # a CNI (Multus, say) already made net1
    life = guest.lifecycle()
    rec = life.prepare("u2", "pod-2", pod, {ANNOTATION: "2"}, soon())
    assert rec is not None and [vf.slot.ifname for vf in rec.vfs] == ["net2", "net3"]
    assert {"net2", "net3"} <= set(links(pod))
    life.release("u2")
    assert guest.host.leases == {}


def test_a_retried_ready_pod_is_not_refused_for_its_own_vfs(guest: Guest, make_netns):
    pod = make_netns()
    life = guest.lifecycle()
    ann = {ANNOTATION: json.dumps([{"ifname": "data0"}])}
    rec = life.prepare("u3", "pod-3", pod, ann, soon())
    assert rec is not None and "data0" in links(pod)
    # The runtime retries RunPodSandbox: data0 is in the netns now, and it is this pod's own.
    assert life.prepare("u3", "pod-3", pod, ann, soon()) == rec
    life.release("u3")
    assert guest.host.leases == {}


def test_a_vanished_pod_netns_fails_before_the_host_call(guest: Guest, tmp_path):
    life = guest.lifecycle()
    with pytest.raises(PodError, match=r"pod netns: .*netns .*gone cannot be opened"):
        life.prepare("u4", "pod-4", str(tmp_path / "gone"), {ANNOTATION: "1"}, soon())
    assert guest.host.calls == []
