"""The stub against runtimes newer than containerd 1.7.24, on the wire: containerd 2.1 (NRI v0.8: split
Synchronize, timeouts in Configure, pod IPs, CDI devices) and containerd 2.3 (NRI v0.12: dedicated
per-event RPCs with a StateChange fallback, NRI_version both ways, pod update events)."""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TypeVar

import pytest

from nri_plugin.framing import MAX_TTRPC_DATA
from nri_plugin.nri_pb import nri_pb2 as nri
from nri_plugin.plugin_service import EventContext
from nri_plugin.stub import NRI_API_VERSION, Stub
from tests.nri.fake_runtime import FakeRuntime
from tests.nri.runtime_peers import RESPONSES, Containerd21, Containerd23
from vm_side.runtime_model import (
    ContainerAdjustment,
    ContainerInfo,
    ContainerUpdate,
    Device,
    PodInfo,
    runtime_info,
    supports_cdi_devices,
)

P = TypeVar("P", bound=FakeRuntime)
CDI = ("vfhotplug.io/vf=0000:3b:02.1", "vfhotplug.io/vf=0000:3b:02.2")


class EveryEventPlugin:
    """Handles every event the stub knows; records (handler, pod uid, container id, ctx) per call."""

    def __init__(self, *, updates: list[ContainerUpdate] | None = None, cdi: tuple[str, ...] = ()) -> None:
        self.calls: list[tuple[str, str, str, EventContext]] = []
        self.pods: list[PodInfo] = []
        self.synced: list[tuple[list[PodInfo], list[ContainerInfo], EventContext]] = []
        self.updates = updates
        self.cdi = cdi
        self.lock = threading.Lock()

    def _pod(self, handler: str, pod: PodInfo, ctx: EventContext) -> None:
        with self.lock:
            self.calls.append((handler, pod.uid, "", ctx))
            self.pods.append(pod)
        if "test/fail" in pod.annotations:
            raise ValueError(pod.annotations["test/fail"])
        if "test/sleep" in pod.annotations:
            time.sleep(float(pod.annotations["test/sleep"]))

    def _ctr(self, handler: str, pod: PodInfo, ctr: ContainerInfo, ctx: EventContext) -> None:
        with self.lock:
            self.calls.append((handler, pod.uid, ctr.id, ctx))

    def synchronize(
        self, pods: list[PodInfo], containers: list[ContainerInfo], ctx: EventContext
    ) -> list[ContainerUpdate] | None:
        self.synced.append((pods, containers, ctx))
        return self.updates

    def run_pod_sandbox(self, pod: PodInfo, ctx: EventContext) -> None:
        self._pod("run_pod_sandbox", pod, ctx)

    def stop_pod_sandbox(self, pod: PodInfo, ctx: EventContext) -> None:
        self._pod("stop_pod_sandbox", pod, ctx)

    def remove_pod_sandbox(self, pod: PodInfo, ctx: EventContext) -> None:
        self._pod("remove_pod_sandbox", pod, ctx)

    def update_pod_sandbox(self, pod: PodInfo, ctx: EventContext) -> None:
        self._pod("update_pod_sandbox", pod, ctx)

    def post_update_pod_sandbox(self, pod: PodInfo, ctx: EventContext) -> None:
        self._pod("post_update_pod_sandbox", pod, ctx)

    def create_container(self, pod: PodInfo, ctr: ContainerInfo, ctx: EventContext) -> ContainerAdjustment:
        self._ctr("create_container", pod, ctr, ctx)
        return ContainerAdjustment(
            env={"PCIDEVICE_TEST": "1"}, devices=(Device("/dev/vfio/7", 243, 7),), cdi_devices=self.cdi
        )

    def post_create_container(self, pod: PodInfo, ctr: ContainerInfo, ctx: EventContext) -> None:
        self._ctr("post_create_container", pod, ctr, ctx)

    def start_container(self, pod: PodInfo, ctr: ContainerInfo, ctx: EventContext) -> None:
        self._ctr("start_container", pod, ctr, ctx)

    def post_start_container(self, pod: PodInfo, ctr: ContainerInfo, ctx: EventContext) -> None:
        self._ctr("post_start_container", pod, ctr, ctx)

    def post_update_container(self, pod: PodInfo, ctr: ContainerInfo, ctx: EventContext) -> None:
        self._ctr("post_update_container", pod, ctr, ctx)

    def remove_container(self, pod: PodInfo, ctr: ContainerInfo, ctx: EventContext) -> None:
        self._ctr("remove_container", pod, ctr, ctx)


class PodOnlyPlugin:
    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []

    def run_pod_sandbox(self, pod: PodInfo, ctx: EventContext) -> None:
        self.calls.append(("run_pod_sandbox", pod.uid))

    def stop_pod_sandbox(self, pod: PodInfo, ctx: EventContext) -> None:
        self.calls.append(("stop_pod_sandbox", pod.uid))


class Wires:
    """Stubs on socketpairs, each with a runtime peer; all stopped at teardown."""

    def __init__(self) -> None:
        self._made: list[tuple[Stub, socket.socket, threading.Thread]] = []

    def connect(self, peer_cls: type[P], plugin: object, **stub_kwargs: int) -> tuple[P, Stub]:
        a, b = socket.socketpair()
        stub = Stub(plugin, name="vfhotplug", idx="10", conn=a, **stub_kwargs)  # type: ignore[arg-type]
        runner = threading.Thread(target=stub.run, daemon=True)
        runner.start()
        self._made.append((stub, b, runner))
        peer = peer_cls(b)
        peer.accept_registration()
        return peer, stub

    def close(self) -> None:
        for stub, sock, runner in self._made:
            stub.stop()
            sock.close()
            runner.join(5)


@pytest.fixture
def wires() -> Iterator[Wires]:
    w = Wires()
    yield w
    w.close()


def _pod(uid: str, **annotations: str) -> nri.PodSandbox:
    pod = nri.PodSandbox(id="sb-" + uid, name="p-" + uid, uid=uid, namespace="default")
    pod.annotations.update(annotations)
    pod.linux.namespaces.add(type="network", path=f"/run/netns/{uid}")
    return pod


# --- RuntimeInfo: what Configure tells about the runtime ---


@pytest.mark.parametrize(
    ("name", "version", "sent", "timeouts", "expected", "basis"),
    [
        ("containerd", "1.7.24~ds1", "", 0, (0, 6, 1), "runtime version"),
        ("containerd", "2.1.9~ds1", "", 2000, (0, 8, 0), "runtime version"),
        ("containerd", "v2.2.1", "", 2000, (0, 11, 0), "runtime version"),
        ("cri-o", "1.34.2", "", 2000, (0, 10, 0), "runtime version"),
        ("some-runtime", "3.0", "", 2000, (0, 8, 0), "timeouts"),  # only v0.8+ send timeouts
        ("containerd", "1.7.24~ds1", "", 2000, (0, 8, 0), "timeouts"),  # the fields outrank the table
        ("containerd", "v2.3.0", "v0.12.1-0.20260101000000-0123456789ab", 2000, (0, 12, 1), "sent"),
        ("containerd", "v2.3.0", "0.0.0-unknown", 2000, (0, 12, 0), "sent"),  # only v0.12+ send it
        ("", "", "", 0, (0, 6, 1), "assumed"),
    ],
    # ids without the word "containerd": `-k "not containerd"` deselects the real-containerd tests
    ids=[
        "cd1.7.24",
        "cd2.1",
        "cd2.2.1",
        "crio1.34",
        "unknown+timeouts",
        "cd1.7+timeouts",
        "sent",
        "sent-unknown",
        "nothing",
    ],
)
def test_runtime_info_knows_the_nri_version(name, version, sent, timeouts, expected, basis) -> None:
    info = runtime_info(name, version, nri_version=sent, request_timeout_ms=timeouts)
    assert (info.nri_version, info.nri_version_basis) == (expected, basis)
    assert supports_cdi_devices(info) is (expected >= (0, 8, 0))


def test_runtime_info_timeouts_default_to_the_v061_runtime_defaults() -> None:
    old = runtime_info("containerd", "1.7.24~ds1")
    assert (old.registration_timeout_s, old.request_timeout_s, old.timeouts_sent) == (5.0, 2.0, False)
    new = runtime_info("containerd", "2.1.9", registration_timeout_ms=1500, request_timeout_ms=250)
    assert (new.registration_timeout_s, new.request_timeout_s, new.timeouts_sent) == (1.5, 0.25, True)


# --- containerd 2.1 (NRI v0.8) ---


def test_split_synchronize_over_4_mib_reaches_the_handler_once(wires: Wires) -> None:
    updates = [ContainerUpdate("c-3"), ContainerUpdate("c-7", ignore_failure=True)]
    plugin = EveryEventPlugin(updates=updates)
    rt, stub = wires.connect(Containerd21, plugin)
    rt.handshake()
    pods = [_pod(f"u{i:02d}", bulk="x" * (200 << 10)) for i in range(48)]
    pods[5].ips.extend(["10.244.0.5", "fd00::5"])
    containers = [nri.Container(id=f"c-{i}", pod_sandbox_id=f"sb-u{i:02d}") for i in range(30)]

    result = rt.synchronize(pods, containers)

    assert len(result.parts) == 3 and [p.more for p in result.parts] == [True, True, False]
    assert sum(result.part_sizes) > 4 << 20 and max(result.part_sizes) <= MAX_TTRPC_DATA
    # every part but the last: more=true and no updates, else containerd closes the plugin
    assert all(a.more and not a.update for a in result.answers[:-1])
    assert not result.final.more
    assert [(u.container_id, u.ignore_failure) for u in result.final.update] == [
        ("c-3", False),
        ("c-7", True),
    ]
    assert len(plugin.synced) == 1
    got_pods, got_ctrs, ctx = plugin.synced[0]
    assert [p.uid for p in got_pods] == [p.uid for p in pods]
    assert [c.id for c in got_ctrs] == [c.id for c in containers]
    assert got_pods[5].ips == ("10.244.0.5", "fd00::5") and got_pods[5].netns == "/run/netns/u05"
    # one runtime deadline for all parts, counted from the first
    assert 0 < ctx.budget_s <= 2.0 and ctx.runtime.nri_version == (0, 8, 0)
    assert stub.synchronized.is_set()


def test_a_split_synchronize_past_the_bound_is_refused_and_forgotten(wires: Wires) -> None:
    plugin = EveryEventPlugin()
    rt, _ = wires.connect(Containerd21, plugin, max_sync_bytes=1 << 20)
    rt.handshake()
    pods = [_pod(f"big{i}", bulk="x" * (200 << 10)) for i in range(12)]
    with pytest.raises(AssertionError, match=r"part failed: 8 .*1048576 bytes"):
        rt.synchronize(pods, [], max_message=1 << 20)
    assert plugin.synced == []
    # the refused parts are gone: the next synchronization holds only its own pods
    rt.synchronize([_pod("small")], [])
    assert [[p.uid for p in pods] for pods, _, _ in plugin.synced] == [["small"]]


def _listen(tmp_path: Path) -> tuple[socket.socket, str]:
    path = str(tmp_path / "nri.sock")
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(path)
    srv.listen()
    srv.settimeout(10)
    return srv, path


def test_a_split_synchronize_cut_by_a_reconnect_starts_over(tmp_path: Path) -> None:
    srv, path = _listen(tmp_path)
    plugin = EveryEventPlugin()
    stub = Stub(plugin, name="vfhotplug", idx="10", socket_path=path, max_backoff_s=0.2)
    runner = stub.start()
    first = Containerd21(srv.accept()[0])
    first.accept_registration()
    first.handshake(registration_timeout_ms=1500)
    part = nri.SynchronizeRequest(pods=[_pod("gone1"), _pod("gone2")], more=True)
    answer = nri.SynchronizeResponse.FromString(first.call("Synchronize", part.SerializeToString()).payload)
    assert answer.more
    first.sock.close()  # containerd restarts in the middle of the parts

    second = Containerd21(srv.accept()[0])
    second.accept_registration()
    second.handshake()
    second.synchronize([_pod("live")], [nri.Container(id="c-live", pod_sandbox_id="sb-live")])
    assert [([p.uid for p in pods], [c.id for c in ctrs]) for pods, ctrs, _ in plugin.synced] == [
        (["live"], ["c-live"])
    ]
    # the registration deadline the first runtime configured applies to the next registration
    assert first.registrations[0].timeout_nano == 5_000_000_000
    assert second.registrations[0].timeout_nano == 1_500_000_000
    stub.stop()
    runner.join(5)
    second.sock.close()
    srv.close()


def test_the_request_timeout_from_configure_is_the_budget(wires: Wires, caplog) -> None:
    plugin = EveryEventPlugin()
    rt, stub = wires.connect(Containerd21, plugin)
    rt.handshake(request_timeout_ms=200)
    with caplog.at_level(logging.WARNING, logger="nri_plugin.plugin_service"):
        reply = rt.state_change(nri.RUN_POD_SANDBOX, _pod("slow", **{"test/sleep": "0.15"}))
    assert reply is not None and reply.code == 0
    warnings = [r.getMessage() for r in caplog.records if "budget" in r.getMessage()]
    assert len(warnings) == 1 and "default/p-slow (uid slow)" in warnings[0] and "0.20s budget" in warnings[0]
    # without timeout_nano the configured timeout still rules, not the 2 s default
    ev = nri.StateChangeEvent(event=nri.RUN_POD_SANDBOX, pod=_pod("quick")).SerializeToString()
    assert rt.call("StateChange", ev, timeout_nano=0).code == 0
    budgets = {uid: ctx.budget_s for _, uid, _, ctx in plugin.calls}
    assert budgets["quick"] == 0.2 and budgets["slow"] <= 0.2
    assert stub.runtime_info.request_timeout_s == 0.2


def test_without_timeouts_in_configure_the_budget_is_2_s(wires: Wires) -> None:
    plugin = EveryEventPlugin()
    rt, stub = wires.connect(FakeRuntime, plugin)
    rt.configure(runtime_name="containerd", runtime_version="1.7.24~ds1")
    ev = nri.StateChangeEvent(event=nri.RUN_POD_SANDBOX, pod=_pod("old")).SerializeToString()
    assert rt.call("StateChange", ev, timeout_nano=0).code == 0
    ctx = plugin.calls[0][3]
    assert ctx.budget_s == 2.0 and ctx.runtime.nri_version == (0, 6, 1) and not ctx.runtime.timeouts_sent
    assert stub.runtime_info.registration_timeout_s == 5.0


def test_pod_ips_reach_podinfo(wires: Wires) -> None:
    plugin = EveryEventPlugin()
    rt, _ = wires.connect(Containerd21, plugin)
    rt.handshake()
    pod = _pod("ip")
    pod.ips.extend(["10.244.1.7", "fd00:10:244:1::7"])
    rt.state_change(nri.RUN_POD_SANDBOX, pod)
    rt.synchronize([pod], [])
    assert plugin.pods[0].ips == ("10.244.1.7", "fd00:10:244:1::7")
    assert plugin.synced[0][0][0].ips == ("10.244.1.7", "fd00:10:244:1::7")


def _create(rt: FakeRuntime, uid: str) -> tuple[int, str, nri.CreateContainerResponse]:
    req = nri.CreateContainerRequest(pod=_pod(uid), container=nri.Container(id="c-" + uid))
    reply = rt.call("CreateContainer", req.SerializeToString())
    return reply.code, reply.message, nri.CreateContainerResponse.FromString(reply.payload)


def test_cdi_devices_are_sent_to_a_v08_runtime(wires: Wires) -> None:
    rt, _ = wires.connect(Containerd21, EveryEventPlugin(cdi=CDI))
    rt.handshake()
    code, _, resp = _create(rt, "cdi")
    assert code == 0
    assert tuple(d.name for d in resp.adjust.CDI_devices) == CDI
    assert [d.path for d in resp.adjust.linux.devices] == ["/dev/vfio/7"]
    assert {kv.key: kv.value for kv in resp.adjust.env} == {"PCIDEVICE_TEST": "1"}


def test_cdi_devices_are_refused_for_a_v061_runtime(wires: Wires, caplog) -> None:
    plugin = EveryEventPlugin(cdi=CDI)
    rt, _ = wires.connect(FakeRuntime, plugin)
    rt.configure(runtime_name="containerd", runtime_version="1.7.24~ds1")
    with caplog.at_level(logging.ERROR, logger="nri_plugin.plugin_service"):
        code, message, _ = _create(rt, "old")
    assert code == 2
    assert "CDI devices" in message and "NRI v0.6.1" in message and "supports_cdi_devices" in message
    assert "default/p-old (uid old)" in message
    assert any("supports_cdi_devices" in r.getMessage() for r in caplog.records)
    # the same plugin without CDI devices still adjusts containers on that runtime
    plugin.cdi = ()
    code, _, resp = _create(rt, "old2")
    assert code == 0 and not resp.adjust.CDI_devices and resp.adjust.linux.devices[0].path == "/dev/vfio/7"


def test_pod_update_events_are_asked_for_only_where_the_runtime_knows_them(wires: Wires, caplog) -> None:
    # NRI v0.8 fails Configure on any bit above 0x7FF, so events 12 and 13 stay out of the mask there.
    with caplog.at_level(logging.WARNING, logger="nri_plugin.plugin_service"):
        rt21, _ = wires.connect(Containerd21, EveryEventPlugin())
        assert rt21.handshake().events == 0x7FF & ~(0x80 | 0x200)  # no Update/StopContainer handlers
    assert any("0x1800" in r.getMessage() for r in caplog.records)
    rt23, _ = wires.connect(Containerd23, EveryEventPlugin())
    assert rt23.handshake().events == (0x7FF & ~(0x80 | 0x200)) | 0x800 | 0x1000


class PodUpdateOnlyPlugin:
    def update_pod_sandbox(self, pod: PodInfo, ctx: EventContext) -> None:
        raise AssertionError("a v0.8 runtime never sends this")


def test_a_plugin_with_nothing_the_runtime_delivers_fails_configure(wires: Wires) -> None:
    # Answering mask 0 would subscribe it to every event instead of none.
    rt, _ = wires.connect(Containerd21, PodUpdateOnlyPlugin())
    req = nri.ConfigureRequest(runtime_name="containerd", runtime_version="2.1.9~ds1", request_timeout=2000)
    reply = rt.call("Configure", req.SerializeToString())
    assert reply.code == 2 and "delivers none of the events" in reply.message and "0x800" in reply.message


# --- containerd 2.3 (NRI v0.12) ---


def test_registration_carries_the_nri_version(wires: Wires) -> None:
    a, b = socket.socketpair()
    stub = Stub(PodOnlyPlugin(), name="vfhotplug", idx="10", conn=a)
    runner = threading.Thread(target=stub.run, daemon=True)
    runner.start()
    reg = Containerd23(b).accept_registration()
    assert stub.registered.wait(5)
    assert (reg.plugin_name, reg.plugin_idx, reg.NRI_version) == ("vfhotplug", "10", NRI_API_VERSION)
    assert NRI_API_VERSION == "v0.12.0"
    stub.stop()
    b.close()
    runner.join(5)


POD_EVENTS = [
    (nri.RUN_POD_SANDBOX, "run_pod_sandbox"),
    (nri.UPDATE_POD_SANDBOX, "update_pod_sandbox"),
    (nri.POST_UPDATE_POD_SANDBOX, "post_update_pod_sandbox"),
    (nri.STOP_POD_SANDBOX, "stop_pod_sandbox"),
    (nri.REMOVE_POD_SANDBOX, "remove_pod_sandbox"),
]
CONTAINER_EVENTS = [
    (nri.POST_CREATE_CONTAINER, "post_create_container"),
    (nri.START_CONTAINER, "start_container"),
    (nri.POST_START_CONTAINER, "post_start_container"),
    (nri.POST_UPDATE_CONTAINER, "post_update_container"),
    (nri.REMOVE_CONTAINER, "remove_container"),
]


def test_dedicated_rpcs_reach_the_handlers_with_the_right_answers(wires: Wires) -> None:
    plugin = EveryEventPlugin()
    rt, _ = wires.connect(Containerd23, plugin)
    rt.handshake(request_timeout_ms=1500)
    for event, _ in POD_EVENTS:
        reply = rt.event(event, _pod("p1"))
        assert reply is not None and (reply.code, reply.had_status) == (0, False)
    for event, _ in CONTAINER_EVENTS:
        reply = rt.event(event, _pod("p1"), nri.Container(id="c1", pod_sandbox_id="sb-p1"))
        assert reply is not None and reply.code == 0
        # the answer decodes as that RPC's own response message
        assert RESPONSES[rt.methods[-1]].FromString(reply.payload) == RESPONSES[rt.methods[-1]]()
    assert not rt.fell_back and "StateChange" not in rt.methods
    assert rt.methods == [
        "RunPodSandbox",
        "UpdatePodSandbox",
        "PostUpdatePodSandbox",
        "StopPodSandbox",
        "RemovePodSandbox",
        "PostCreateContainer",
        "StartContainer",
        "PostStartContainer",
        "PostUpdateContainer",
        "RemoveContainer",
    ]
    assert [(h, uid, cid) for h, uid, cid, _ in plugin.calls] == [
        *((h, "p1", "") for _, h in POD_EVENTS),
        *((h, "p1", "c1") for _, h in CONTAINER_EVENTS),
    ]
    ctx = plugin.calls[0][3]
    assert (ctx.runtime.nri_version, ctx.runtime.nri_version_basis) == ((0, 12, 0), "sent")
    assert ctx.budget_s <= 1.5


def test_state_change_and_dedicated_rpcs_deliver_the_same(wires: Wires) -> None:
    via_rpc, via_state_change = EveryEventPlugin(), EveryEventPlugin()
    rt23, _ = wires.connect(Containerd23, via_rpc)
    rt23.handshake()
    rt21, _ = wires.connect(Containerd21, via_state_change)
    rt21.handshake()
    pod = _pod("same", **{"vfhotplug.io/vfs": "2"})
    pod.ips.append("10.0.0.9")
    ctr = nri.Container(id="c-same", pod_sandbox_id="sb-same", env=["A=1"])
    for event, _ in [*POD_EVENTS, *CONTAINER_EVENTS]:
        if event in (nri.UPDATE_POD_SANDBOX, nri.POST_UPDATE_POD_SANDBOX):
            continue  # NRI v0.8 has no pod update events
        rt23.event(event, pod, ctr)
        rt21.state_change(event, pod, ctr)
    assert [c[:3] for c in via_rpc.calls] == [c[:3] for c in via_state_change.calls]
    assert len(via_rpc.calls) == 8
    assert via_rpc.pods == via_state_change.pods  # the same PodInfo records, ips included


def test_a_dedicated_rpc_failure_names_the_pod(wires: Wires) -> None:
    rt, _ = wires.connect(Containerd23, EveryEventPlugin())
    rt.handshake()
    reply = rt.event(nri.RUN_POD_SANDBOX, _pod("bad", **{"test/fail": "pool 'fast' is empty"}))
    assert reply is not None and reply.code == 2
    assert "run_pod_sandbox for pod default/p-bad (uid bad) failed: pool 'fast' is empty" in reply.message
    assert not rt.fell_back  # an error is not Unimplemented: no fallback


def test_an_unsubscribed_dedicated_rpc_is_unimplemented_and_the_fallback_works(wires: Wires) -> None:
    plugin = PodOnlyPlugin()
    rt, _ = wires.connect(Containerd23, plugin)
    assert rt.handshake().events == 0x1 | 0x2
    for rpc in ("RemovePodSandbox", "StartContainer", "UpdatePodSandbox", "PostUpdatePodSandbox"):
        reply = rt.call(rpc, nri.RemovePodSandboxRequest(pod=_pod("x")).SerializeToString())
        assert (reply.code, reply.had_status) == (12, True), rpc
        assert "not subscribed" in reply.message
    assert plugin.calls == []
    # the runtime itself sends only subscribed events, over the dedicated RPC
    assert rt.event(nri.REMOVE_POD_SANDBOX, _pod("x")) is None
    delivered = rt.event(nri.RUN_POD_SANDBOX, _pod("x"))
    assert delivered is not None and delivered.code == 0 and rt.methods == ["RunPodSandbox"]
    # Once any dedicated RPC answered Unimplemented, a v0.12 runtime sends every later event as
    # StateChange (it wraps the plugin for good); the same handlers must answer there.
    rt.fell_back = True
    delivered = rt.event(nri.STOP_POD_SANDBOX, _pod("x"))
    assert delivered is not None and delivered.code == 0 and rt.methods[-1] == "StateChange"
    assert plugin.calls == [("run_pod_sandbox", "x"), ("stop_pod_sandbox", "x")]


def test_pod_update_events_are_answered(wires: Wires) -> None:
    plugin = EveryEventPlugin()
    rt, _ = wires.connect(Containerd23, plugin)
    rt.handshake()
    req = nri.UpdatePodSandboxRequest(pod=_pod("upd"))
    req.overhead_linux_resources.cpu.shares.value = 100
    req.linux_resources.memory.limit.value = 256 << 20
    req.linux_resources.pids.limit = 512
    reply = rt.call("UpdatePodSandbox", req.SerializeToString())
    assert reply.code == 0 and nri.UpdatePodSandboxResponse.FromString(reply.payload) == (
        nri.UpdatePodSandboxResponse()
    )
    post = nri.PostUpdatePodSandboxRequest(pod=_pod("upd")).SerializeToString()
    assert rt.call("PostUpdatePodSandbox", post).code == 0
    # NRI v0.10/v0.11 (containerd 2.2) send the post-update event as StateChange
    rt22, _ = wires.connect(FakeRuntime, plugin)
    assert rt22.configure(
        runtime_name="containerd", runtime_version="v2.2.0", request_timeout_ms=2000
    ).events & (1 << (nri.POST_UPDATE_POD_SANDBOX - 1))
    ev = nri.StateChangeEvent(event=nri.POST_UPDATE_POD_SANDBOX, pod=_pod("upd22")).SerializeToString()
    assert rt22.call("StateChange", ev).code == 0
    assert [(h, uid) for h, uid, _, _ in plugin.calls] == [
        ("update_pod_sandbox", "upd"),
        ("post_update_pod_sandbox", "upd"),
        ("post_update_pod_sandbox", "upd22"),
    ]


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        out.append((n & 0x7F) | (0x80 if n > 0x7F else 0))
        n >>= 7
        if not n:
            return bytes(out)


def _field(number: int, data: bytes) -> bytes:
    """A length-delimited field, written by hand so it can carry fields our .proto does not declare."""
    return _varint(number << 3 | 2) + _varint(len(data)) + data


def test_unknown_fields_from_a_newer_runtime_are_tolerated(wires: Wires) -> None:
    plugin = EveryEventPlugin()
    rt, _ = wires.connect(Containerd23, plugin)
    rt.handshake()
    # NRI-main Container fields we do not declare: created_at = 14 (varint), CDI_devices = 20 (message)
    ctr = nri.Container(id="c-new").SerializeToString() + _varint(14 << 3) + _varint(1_700_000_000)
    ctr += _field(20, _field(1, b"vendor.com/x=y"))
    pod = _pod("newer").SerializeToString() + _varint(111 << 3) + _varint(1)  # an unknown field 111
    payload = _field(1, pod) + _field(2, ctr) + _field(9, b"future")  # and one on the request itself
    assert rt.call("StartContainer", payload).code == 0
    assert plugin.calls[-1][:3] == ("start_container", "newer", "c-new")
