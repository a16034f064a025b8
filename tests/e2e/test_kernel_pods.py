"""Kernel-mode pods through CRI on the real containerd, the real vfhotplug-nri process and the real host
service (backend `sim`: veth netdevs with the leases' MACs stand in for VFs)."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator

import grpc
import pytest

from testbed.containerd import Containerd, create_container, exec_sync, pod_config, run_pod, start_container
from testbed.containerd import stop_and_remove_pod as remove_pod
from tests.e2e.conftest import stack_for
from tests.stack import SimStack

pytestmark = pytest.mark.containerd
KERNEL_2 = json.dumps(
    [{"ifname": "net1", "ip": "198.51.100.10/24", "mtu": 1400}, {"ifname": "net2", "mtu": 1400}]
)


@pytest.fixture(scope="module")
def stack(containerd: Containerd) -> Iterator[SimStack]:
    yield from stack_for(containerd, vfs=8)


def _pod_leases(stack: SimStack, uid: str) -> list[dict[str, object]]:
    return [vars(lease) for lease in stack.leases() if lease.pod_uid == uid]


def _links_everywhere() -> str:
    """`ip -o link` of the root netns and of every named netns: where a leaked netdev would be."""
    out = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True, check=True).stdout
    return out


def test_kernel_pod_gets_two_vfs_with_lease_macs_mtu_and_address(containerd, stack) -> None:
    rt = containerd.runtime()
    ann = {"vfhotplug.io/vfs": KERNEL_2}
    cfg = pod_config("kern2", annotations=ann, host_network=False)
    pod_id = run_pod(rt, "kern2", annotations=ann, host_network=False)
    uid = cfg.metadata.uid
    leases = _pod_leases(stack, uid)
    assert len(leases) == 2 and {lease["state"] for lease in leases} == {"attached"}
    macs = sorted(str(lease["mac"]) for lease in leases)
    cid = create_container(rt, pod_id, cfg, "app")
    start_container(rt, cid)
    seen = {}
    for ifname in ("net1", "net2"):
        code, mac, _ = exec_sync(rt, cid, ["cat", f"/sys/class/net/{ifname}/address"])
        assert code == 0, f"{ifname} is not in the pod"
        code, mtu, _ = exec_sync(rt, cid, ["cat", f"/sys/class/net/{ifname}/mtu"])
        assert mtu.strip() == "1400"
        seen[ifname] = mac.strip()
    assert sorted(seen.values()) == macs
    code, out, _ = exec_sync(rt, cid, ["ip", "-o", "addr", "show", "net1"])
    assert "198.51.100.10/24" in out
    code, env, _ = exec_sync(rt, cid, ["env"])
    assert "VFHOTPLUG_IFNAMES=net1,net2" in env
    # the pod's netdevs are not in the root netns while it runs
    root_links = _links_everywhere()
    assert not any(mac in root_links for mac in macs)

    remove_pod(rt, pod_id)
    assert _pod_leases(stack, uid) == []
    assert not any(mac in _links_everywhere() for mac in macs)


@pytest.mark.parametrize(
    ("value", "needle"),
    [
        ('[{"count": 0}]', "request 0"),
        ('[{"pool": "net", "colour": "red"}]', "colour"),
        ('[{"mac": "zz:00:00:00:00:01", "ifname": "a"}]', "mac"),
        ('[{"vlan": 5000}]', "vlan"),
        ('[{"mode": "warp"}]', "mode"),
        ('[{"ifname": "x"}, {"ifname": "x"}]', "ifname"),
        ('[{"ip": "10.0.0.1"}]', "ip"),
        ("not json", "vfhotplug.io/vfs"),
        ("99", "count"),
    ],
)
def test_bad_demand_fails_the_pod_naming_the_field_and_takes_no_lease(
    containerd, stack, value, needle
) -> None:
    rt = containerd.runtime()
    before = len(stack.leases())
    with pytest.raises(grpc.RpcError) as err:
        run_pod(rt, "bad-demand", annotations={"vfhotplug.io/vfs": value}, host_network=False)
    details = str(err.value.details())
    assert "vfhotplug.io/vfs" in details and needle in details, details
    assert len(stack.leases()) == before


@pytest.mark.parametrize("ifname", ["eth0", "cnipeer0"])
def test_ifname_the_cni_made_is_refused_before_the_host_call(containerd, stack, ifname) -> None:
    """The test bed's CNI puts eth0 (and its veth peer cnipeer0) into every pod's netns; "bad demand" is
    the plugin's step before the host call, so the host never hears of the pod."""
    rt = containerd.runtime()
    name = f"taken-{ifname}"
    ann = {"vfhotplug.io/vfs": json.dumps([{"ifname": ifname}])}
    with pytest.raises(grpc.RpcError) as err:
        run_pod(rt, name, annotations=ann, host_network=False)
    details = str(err.value.details())
    want = f"bad demand: vfhotplug.io/vfs request 0 field 'ifname': '{ifname}' already exists in the pod's"
    assert want in details and "cnipeer0, eth0, lo" in details, details
    assert _pod_leases(stack, pod_config(name).metadata.uid) == []


def test_pod_without_annotation_costs_no_host_call(containerd, stack) -> None:
    rt = containerd.runtime()
    with stack.admin() as admin:
        before = admin.health(timeout_s=5)
    pod_id = run_pod(rt, "plain")
    remove_pod(rt, pod_id)
    assert stack.leases() == []
    assert before is not None


def test_vpp_pod_without_vpp_configured_is_refused_clearly(containerd, stack) -> None:
    rt = containerd.runtime()
    with pytest.raises(grpc.RpcError) as err:
        run_pod(rt, "no-vpp", annotations={"vfhotplug.io/vfs": '[{"mode": "vpp"}]'}, host_network=False)
    assert "no VPP is configured" in str(err.value.details())
    assert _pod_leases(stack, pod_config("no-vpp").metadata.uid) == []
