"""vpp-mode pods through CRI: real containerd, the real vfhotplug-nri process and host service (sim), and
the VPP API stand-in (tests/vpp_standin: the real vpp_papi protocol, modelled VPP behaviour) started here
and restarted, replaced or broken by the tests."""

from __future__ import annotations

import json
import shutil
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from cri_api.v1 import api_pb2

from testbed.containerd import Containerd, create_container, exec_sync, pod_config, run_pod, start_container
from testbed.containerd import stop_and_remove_pod as remove_pod
from testbed.waiting import eventually
from tests.e2e.conftest import stack_for
from tests.stack import SimStack
from tests.vpp_standin.model import ADMIN_UP, VppModel
from tests.vpp_standin.server import API_DIR, MEMCLNT_DIR, VppStandin
from vm_side.health_report import HEALTH_FILE, read_health
from vm_side.vpp_pod import Tag, parse_tag

pytestmark = pytest.mark.containerd
VPP_2 = {"vfhotplug.io/vfs": json.dumps([{"count": 2, "mode": "vpp"}])}


class Vpp:
    """The stand-in on a fixed socket, replaceable mid-test (another message table, or down)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.socket = root / "api.sock"
        self.memif_dir = root / "memif"
        self.standin = VppStandin(self.socket).start()

    @property
    def model(self) -> VppModel:
        return self.standin.model

    def replace(self, offer: tuple[str, ...] = ("dev", "avf")) -> VppStandin:
        self.standin.stop()
        self.standin = VppStandin(self.socket, offer=offer).start()
        return self.standin


@pytest.fixture(scope="module")
def vpp() -> Iterator[Vpp]:
    v = Vpp(Path(tempfile.mkdtemp(prefix="vfh-vpp-")))
    yield v
    v.standin.stop()
    shutil.rmtree(v.root, ignore_errors=True)


@pytest.fixture(scope="module")
def stack(containerd: Containerd, vpp: Vpp) -> Iterator[SimStack]:
    extra = f"""
[vpp]
socket = "{vpp.socket}"
api_dirs = ["{API_DIR}", "{MEMCLNT_DIR}"]
memif_dir = "{vpp.memif_dir}"
check_interval_s = 0.5
"""
    yield from stack_for(containerd, vfs=8, plugin_extra=extra)


@pytest.fixture(autouse=True)
def healthy_vpp(vpp: Vpp) -> Iterator[None]:
    vpp.replace()
    yield
    vpp.replace()


def pods_in_vpp(model: VppModel) -> dict[str, list[Tag]]:
    """Our tags in VPP, by pod uid."""
    out: dict[str, list[Tag]] = {}
    for i in list(model.interfaces.values()):
        t = parse_tag(i.tag)
        if t is not None:
            out.setdefault(t.pod_uid, []).append(t)
    return out


def assert_programmed(model: VppModel, uid: str, kind: str, guest_pcis: list[str]) -> None:
    ifaces = [i for i in list(model.interfaces.values()) if (t := parse_tag(i.tag)) and t.pod_uid == uid]
    vfs = sorted((i for i in ifaces if i.kind == kind), key=lambda i: i.pci)
    memifs = [i for i in ifaces if i.kind == "memif"]
    assert [i.pci for i in vfs] == sorted(guest_pcis) and len(memifs) == 2, ifaces
    for vf in vfs:
        mif = model.interfaces[model.xconnects[vf.sw_if_index]]
        assert mif.kind == "memif" and model.xconnects[mif.sw_if_index] == vf.sw_if_index
        assert vf.flags & ADMIN_UP and mif.flags & ADMIN_UP
        n = parse_tag(vf.tag).index  # type: ignore[union-attr]
        assert parse_tag(mif.tag) == Tag(uid, "memif", n) and mif.memif is not None and mif.memif[1] == n


def is_programmed(model: VppModel, uid: str, kind: str, guest_pcis: list[str]) -> bool:
    try:
        assert_programmed(model, uid, kind, guest_pcis)
    except (AssertionError, KeyError):
        return False
    return True


def assert_vpp_empty(model: VppModel) -> None:
    assert [i.kind for i in list(model.interfaces.values())] == ["local"]
    assert model.devices == {} and list(model.memif_sockets) == [0] and model.xconnects == {}


def leases_of(stack: SimStack, uid: str) -> list[str]:
    return sorted(str(x.guest_pci) for x in stack.leases() if x.pod_uid == uid)


@pytest.mark.parametrize(("offer", "kind"), [(("dev", "avf"), "dev"), (("avf",), "avf")])
def test_vpp_pod_gets_vfs_in_vpp_and_a_memif_socket(containerd, stack, vpp, offer, kind) -> None:
    vpp.replace(offer)
    rt = containerd.runtime()
    name = f"vpp2-{kind}"
    cfg = pod_config(name, annotations=VPP_2, host_network=False)
    uid = cfg.metadata.uid
    pod_id = run_pod(rt, name, annotations=VPP_2, host_network=False)
    guest_pcis = leases_of(stack, uid)
    assert len(guest_pcis) == 2
    assert_programmed(vpp.model, uid, kind, guest_pcis)
    sock = vpp.memif_dir / uid / "memif.sock"
    assert stat.S_ISSOCK(sock.stat().st_mode) and vpp.model.memif_sockets[1] == str(sock)

    cid = create_container(rt, pod_id, cfg, "app")
    start_container(rt, cid)
    code, out, _ = exec_sync(rt, cid, ["ls", "-l", "/run/vfhotplug/memif/memif.sock"])
    assert code == 0 and out.startswith("s"), out  # the socket, seen from inside the pod
    code, env, _ = exec_sync(rt, cid, ["env"])
    lines = env.splitlines()
    assert "VFHOTPLUG_MEMIF_SOCKET=/run/vfhotplug/memif/memif.sock" in lines
    assert "VFHOTPLUG_MEMIF_IDS=0,1" in lines and "VFHOTPLUG_MODES=vpp,vpp" in lines
    # VPP's own buffer pools feed the health view while vpp pods exist
    eventually(lambda: _vpp_health(stack) == "healthy", 10, "VPP buffer health in the health file")

    remove_pod(rt, pod_id)
    assert_vpp_empty(vpp.model)
    assert not (vpp.memif_dir / uid).exists()
    assert leases_of(stack, uid) == []


@pytest.mark.parametrize(
    ("fault", "needle"),
    [
        ("no driver messages", "VPP offers no VF driver path"),
        ("vpp down", "does not answer"),
        ("second VF fails", "failed with -1 (UNSPECIFIED)"),
    ],
)
def test_vpp_failure_fails_the_pod_and_undoes_everything(containerd, stack, vpp, fault, needle) -> None:
    if fault == "no driver messages":
        vpp.replace(offer=())
    elif fault == "vpp down":
        vpp.standin.stop()
    else:
        vpp.standin.fail_on("dev_attach", 2, -1)
    rt = containerd.runtime()
    name = f"vpp-fail-{fault.split()[0]}"
    uid = pod_config(name).metadata.uid
    with pytest.raises(grpc.RpcError) as err:
        run_pod(rt, name, annotations=VPP_2, host_network=False)
    details = str(err.value.details())
    assert needle in details and uid in details and "rolled back" in details, details
    assert leases_of(stack, uid) == []
    assert pods_in_vpp(vpp.model) == {}
    assert vpp.model.devices == {} and list(vpp.model.memif_sockets) == [0]
    assert not (vpp.memif_dir / uid).exists()


def test_vpp_restart_recreates_the_pods_objects(containerd, stack, vpp) -> None:
    rt = containerd.runtime()
    cfg = pod_config("vpp-restart", annotations=VPP_2, host_network=False)
    uid = cfg.metadata.uid
    pod_id = run_pod(rt, "vpp-restart", annotations=VPP_2, host_network=False)
    guest_pcis = leases_of(stack, uid)
    vpp.standin.restart()  # VPP loses every object; the plugin's background check re-creates them
    eventually(lambda: is_programmed(vpp.model, uid, "dev", guest_pcis), 10, "the pod's objects back in VPP")
    assert stat.S_ISSOCK((vpp.memif_dir / uid / "memif.sock").stat().st_mode)
    remove_pod(rt, pod_id)
    assert_vpp_empty(vpp.model)


def _vpp_health(stack: SimStack) -> str | None:
    entry = read_health(stack.plugin_state / HEALTH_FILE).get("vpp")
    return None if entry is None else entry.state


def _running(rt: object, name: str) -> str | None:
    pods = rt.ListPodSandbox(api_pb2.ListPodSandboxRequest()).items  # type: ignore[attr-defined]
    return next((p.id for p in pods if p.metadata.name == name and p.state == api_pb2.SANDBOX_READY), None)


def test_plugin_killed_after_vpp_attach_leaves_vpp_with_the_live_pods_only(containerd, stack, vpp) -> None:
    rt = containerd.runtime()
    keep_cfg = pod_config("vpp-keeper", annotations=VPP_2, host_network=False)
    keeper = run_pod(rt, "vpp-keeper", annotations=VPP_2, host_network=False)
    crash_uid = pod_config("vpp-crash").metadata.uid
    stack.kill_plugin()
    stack.start_plugin(env={"VFHOTPLUG_CRASH_AFTER": "vpp attach"})
    try:
        run_pod(rt, "vpp-crash", annotations=VPP_2, host_network=False)
    except grpc.RpcError:
        pass  # failing cleanly is one of the two allowed outcomes
    assert stack.plugin_proc is not None
    stack.plugin_proc.wait(10)
    assert crash_uid in pods_in_vpp(vpp.model)  # the crash left a half-programmed pod in VPP
    stack.start_plugin()
    crashed = _running(rt, "vpp-crash")
    live = {keep_cfg.metadata.uid} | ({crash_uid} if crashed else set())

    def vpp_holds_live_pods() -> bool:
        return set(pods_in_vpp(vpp.model)) == live and all(
            is_programmed(vpp.model, uid, "dev", leases_of(stack, uid)) for uid in live
        )

    eventually(vpp_holds_live_pods, 20, f"VPP holding exactly {sorted(live)}")
    for pod_id in (keeper, crashed):
        if pod_id:
            remove_pod(rt, pod_id)
    assert_vpp_empty(vpp.model)
    assert leases_of(stack, crash_uid) == []
