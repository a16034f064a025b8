"""The stub against containerd 2.3 (NRI v0.12) on the wire: dedicated per-event RPCs with a StateChange
fallback, NRI_version both ways, pod update events, unknown fields of a newer runtime."""

from __future__ import annotations

import socket
import threading

from nri_plugin.nri_pb import nri_pb2 as nri
from nri_plugin.stub import NRI_API_VERSION, Stub
from tests.nri.event_plugins import EveryEventPlugin, PodOnlyPlugin, Wires, pod_pb
from tests.nri.fake_runtime import FakeRuntime
from tests.nri.runtime_peers import RESPONSES, Containerd21, Containerd23


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
        reply = rt.event(event, pod_pb("p1"))
        assert reply is not None and (reply.code, reply.had_status) == (0, False)
    for event, _ in CONTAINER_EVENTS:
        reply = rt.event(event, pod_pb("p1"), nri.Container(id="c1", pod_sandbox_id="sb-p1"))
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
    pod = pod_pb("same", **{"vfhotplug.io/vfs": "2"})
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
    reply = rt.event(nri.RUN_POD_SANDBOX, pod_pb("bad", **{"test/fail": "pool 'fast' is empty"}))
    assert reply is not None and reply.code == 2
    assert "run_pod_sandbox for pod default/p-bad (uid bad) failed: pool 'fast' is empty" in reply.message
    assert not rt.fell_back  # an error is not Unimplemented: no fallback


def test_an_unsubscribed_dedicated_rpc_is_unimplemented_and_the_fallback_works(wires: Wires) -> None:
    plugin = PodOnlyPlugin()
    rt, _ = wires.connect(Containerd23, plugin)
    assert rt.handshake().events == 0x1 | 0x2
    for rpc in ("RemovePodSandbox", "StartContainer", "UpdatePodSandbox", "PostUpdatePodSandbox"):
        reply = rt.call(rpc, nri.RemovePodSandboxRequest(pod=pod_pb("x")).SerializeToString())
        assert (reply.code, reply.had_status) == (12, True), rpc
        assert "not subscribed" in reply.message
    assert plugin.calls == []
    # the runtime itself sends only subscribed events, over the dedicated RPC
    assert rt.event(nri.REMOVE_POD_SANDBOX, pod_pb("x")) is None
    delivered = rt.event(nri.RUN_POD_SANDBOX, pod_pb("x"))
    assert delivered is not None and delivered.code == 0 and rt.methods == ["RunPodSandbox"]
    # Once any dedicated RPC answered Unimplemented, a v0.12 runtime sends every later event as
    # StateChange (it wraps the plugin for good); the same handlers must answer there.
    rt.fell_back = True
    delivered = rt.event(nri.STOP_POD_SANDBOX, pod_pb("x"))
    assert delivered is not None and delivered.code == 0 and rt.methods[-1] == "StateChange"
    assert plugin.calls == [("run_pod_sandbox", "x"), ("stop_pod_sandbox", "x")]


def test_pod_update_events_are_answered(wires: Wires) -> None:
    plugin = EveryEventPlugin()
    rt, _ = wires.connect(Containerd23, plugin)
    rt.handshake()
    req = nri.UpdatePodSandboxRequest(pod=pod_pb("upd"))
    req.overhead_linux_resources.cpu.shares.value = 100
    req.linux_resources.memory.limit.value = 256 << 20
    req.linux_resources.pids.limit = 512
    reply = rt.call("UpdatePodSandbox", req.SerializeToString())
    assert reply.code == 0 and nri.UpdatePodSandboxResponse.FromString(reply.payload) == (
        nri.UpdatePodSandboxResponse()
    )
    post = nri.PostUpdatePodSandboxRequest(pod=pod_pb("upd")).SerializeToString()
    assert rt.call("PostUpdatePodSandbox", post).code == 0
    # NRI v0.10/v0.11 (containerd 2.2) send the post-update event as StateChange
    rt22, _ = wires.connect(FakeRuntime, plugin)
    assert rt22.configure(
        runtime_name="containerd", runtime_version="v2.2.0", request_timeout_ms=2000
    ).events & (1 << (nri.POST_UPDATE_POD_SANDBOX - 1))
    ev = nri.StateChangeEvent(event=nri.POST_UPDATE_POD_SANDBOX, pod=pod_pb("upd22")).SerializeToString()
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
    pod = pod_pb("newer").SerializeToString() + _varint(111 << 3) + _varint(1)  # an unknown field 111
    payload = _field(1, pod) + _field(2, ctr) + _field(9, b"future")  # and one on the request itself
    assert rt.call("StartContainer", payload).code == 0
    assert plugin.calls[-1][:3] == ("start_container", "newer", "c-new")
