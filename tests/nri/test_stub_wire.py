"""The stub on the wire, against FakeRuntime over a socketpair or a unix socket: registration, event mask,
statuses for bad requests, large adjustments, broken peers and reconnection."""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from nri_plugin.event_routes import event_mask
from nri_plugin.framing import PLUGIN_SERVICE_CONN, TYPE_REQUEST, TYPE_RESPONSE, encode_ttrpc
from nri_plugin.nri_pb import nri_pb2 as nri
from nri_plugin.nri_pb import ttrpc_pb2 as ttrpc
from nri_plugin.plugin_service import EventContext
from nri_plugin.stub import Stub, StubError
from tests.nri.fake_runtime import FakeRuntime
from vm_side.runtime_model import ContainerAdjustment, ContainerInfo, Device, Mount, PodInfo


class RecordingPlugin:
    def __init__(self, adjustment_size: int = 16) -> None:
        self.events: list[tuple[str, str]] = []
        self.synced: list[list[PodInfo]] = []
        self.config = ""
        self.adjustment_size = adjustment_size
        self.release = threading.Event()

    def configure(self, config: str, runtime_name: str, runtime_version: str) -> None:
        self.config = config

    def synchronize(self, pods: list[PodInfo], containers: list[ContainerInfo], ctx: EventContext) -> None:
        self.synced.append(pods)

    def run_pod_sandbox(self, pod: PodInfo, ctx: EventContext) -> None:
        self.events.append(("run", pod.uid))
        if "test/fail" in pod.annotations:
            raise ValueError(pod.annotations["test/fail"])
        if "test/sleep" in pod.annotations:
            time.sleep(float(pod.annotations["test/sleep"]))
        if "test/block" in pod.annotations:
            self.release.wait(10)

    def stop_pod_sandbox(self, pod: PodInfo, ctx: EventContext) -> None:
        self.events.append(("stop", pod.uid))

    def create_container(
        self, pod: PodInfo, container: ContainerInfo, ctx: EventContext
    ) -> ContainerAdjustment:
        self.events.append(("create", container.id))
        return ContainerAdjustment(
            env={"BIG": "x" * self.adjustment_size},
            annotations={"vfhotplug.io/test": "1"},
            mounts=(Mount("/etc/vf", "/tmp"),),
            devices=(Device("/dev/null-copy", 1, 3, file_mode=0o666),),
        )


def _pod_event(event: nri.Event, uid: str, annotations: dict[str, str] | None = None) -> bytes:
    pod = nri.PodSandbox(id="sb-" + uid, name="p-" + uid, uid=uid, namespace="default")
    pod.annotations.update(annotations or {})
    pod.linux.namespaces.add(type="network", path=f"/run/netns/{uid}")
    return nri.StateChangeEvent(event=event, pod=pod).SerializeToString()


@pytest.fixture
def wired() -> Iterator[tuple[FakeRuntime, Stub, RecordingPlugin]]:
    a, b = socket.socketpair()
    plugin = RecordingPlugin(adjustment_size=1 << 20)
    stub = Stub(plugin, name="vfhotplug", idx="10", conn=a, budget_warn_share=0.5)
    runner = threading.Thread(target=stub.run, daemon=True)
    runner.start()
    rt = FakeRuntime(b)
    reg = rt.accept_registration()
    assert (reg.plugin_name, reg.plugin_idx) == ("vfhotplug", "10")
    assert stub.registered.wait(5)
    yield rt, stub, plugin
    stub.stop()
    b.close()
    runner.join(5)


def test_mask_comes_from_the_handlers_defined() -> None:
    assert event_mask(RecordingPlugin()) == 0x1 | 0x2 | 0x8
    assert event_mask(object()) == 0


def test_configure_answers_mask_and_passes_config(wired) -> None:
    rt, _, plugin = wired
    resp = rt.configure("pools = 1")
    assert resp.events == 0x1 | 0x2 | 0x8
    assert plugin.config == "pools = 1"


def test_events_reach_the_plugin_with_pod_data(wired) -> None:
    rt, stub, plugin = wired
    rt.configure()
    assert (
        rt.call(
            "Synchronize", nri.SynchronizeRequest(pods=[nri.PodSandbox(uid="u0")]).SerializeToString()
        ).code
        == 0
    )
    assert [p.uid for p in plugin.synced[0]] == ["u0"]
    assert stub.synchronized.is_set()
    reply = rt.call("StateChange", _pod_event(nri.RUN_POD_SANDBOX, "u1"))
    assert (reply.code, reply.had_status) == (0, False)
    rt.call("StateChange", _pod_event(nri.STOP_POD_SANDBOX, "u1"))
    # REMOVE is not subscribed: acknowledged, not delivered
    assert rt.call("StateChange", _pod_event(nri.REMOVE_POD_SANDBOX, "u1")).code == 0
    assert plugin.events == [("run", "u1"), ("stop", "u1")]


def test_handler_error_names_pod_and_cause(wired) -> None:
    rt, _, _ = wired
    reply = rt.call("StateChange", _pod_event(nri.RUN_POD_SANDBOX, "u2", {"test/fail": "pool 'x' is empty"}))
    assert reply.code == 2
    assert "run_pod_sandbox for pod default/p-u2 (uid u2) failed: pool 'x' is empty" in reply.message


def test_unknown_method_and_service_are_unimplemented(wired) -> None:
    rt, _, _ = wired
    assert rt.call("NoSuchMethod", b"").code == 12
    # A dedicated (v0.12) RPC of an event the plugin has no handler for: the runtime falls back to StateChange
    assert rt.call("RemovePodSandbox", b"").code == 12
    assert rt.call("Configure", b"", service="no.such.Service").code == 12


def test_garbage_is_invalid_argument(wired) -> None:
    rt, _, _ = wired
    assert rt.call_raw(b"\xff\xff\xff garbage").code == 3
    reply = rt.call("StateChange", b"\x0a\xff\xff\xff\x0f")
    assert reply.code == 3 and "StateChangeEvent" in reply.message


def test_one_mib_adjustment_is_cut_into_4096_byte_frames(wired) -> None:
    rt, _, _ = wired
    req = nri.CreateContainerRequest(pod=nri.PodSandbox(uid="u3"), container=nri.Container(id="c1"))
    rt.frame_sizes.clear()
    reply = rt.call("CreateContainer", req.SerializeToString())
    assert reply.code == 0
    adj = nri.CreateContainerResponse.FromString(reply.payload).adjust
    assert {kv.key: len(kv.value) for kv in adj.env} == {"BIG": 1 << 20}
    assert adj.linux.devices[0].path == "/dev/null-copy" and adj.linux.devices[0].file_mode.value == 0o666
    assert len(rt.frame_sizes) > 256 and max(rt.frame_sizes) == 4096


def test_slow_handler_does_not_block_the_reader(wired) -> None:
    rt, _, plugin = wired
    ttrpc_req = ttrpc.Request(
        service="nri.pkg.api.v1alpha1.Plugin",
        method="StateChange",
        payload=_pod_event(nri.RUN_POD_SANDBOX, "slow", {"test/block": "1"}),
    )
    rt.send_raw(PLUGIN_SERVICE_CONN, encode_ttrpc(1, TYPE_REQUEST, ttrpc_req.SerializeToString()))
    rt._next_stream = 3
    # answered while the first request is still inside its handler
    assert rt.call("Synchronize", nri.SynchronizeRequest().SerializeToString()).code == 0
    plugin.release.set()
    assert rt.receive(PLUGIN_SERVICE_CONN, TYPE_RESPONSE).stream_id == 1


def test_budget_warning_names_the_pod(wired, caplog) -> None:
    rt, _, _ = wired
    with caplog.at_level(logging.WARNING, logger="nri_plugin.plugin_service"):
        ev = _pod_event(nri.RUN_POD_SANDBOX, "u4", {"test/sleep": "0.15"})
        assert rt.call("StateChange", ev, timeout_nano=200_000_000).code == 0
    assert any(
        "default/p-u4 (uid u4)" in r.getMessage() and "budget" in r.getMessage() for r in caplog.records
    )


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (FakeRuntime.mux_header(7, 3) + b"abc", "unknown connection id 7"),
        (FakeRuntime.mux_header(1, 4) + b"ab", "middle of a frame"),
        (FakeRuntime.mux_header(1, (1 << 24) + 1), "over the"),
        (FakeRuntime.mux_header(1, 10) + encode_ttrpc(2, TYPE_REQUEST, b""), "bad request stream id 2"),
    ],
    ids=["unknown-conn", "truncated", "oversized", "even-stream"],
)
def test_broken_peer_closes_the_connection_with_a_clear_reason(raw: bytes, reason: str, caplog) -> None:
    a, b = socket.socketpair()
    stub = Stub(RecordingPlugin(), name="vfhotplug", idx="10", conn=a)
    runner = threading.Thread(target=stub.run, daemon=True)
    runner.start()
    rt = FakeRuntime(b)
    rt.accept_registration()
    with caplog.at_level(logging.WARNING, logger="nri_plugin"):
        rt.send_bytes(raw)
        if reason == "middle of a frame":
            b.shutdown(socket.SHUT_WR)
        assert rt.closed_by_peer()
        runner.join(5)
    b.close()
    assert not runner.is_alive()
    assert any(reason in r.getMessage() for r in caplog.records), [r.getMessage() for r in caplog.records]


def test_external_plugin_survives_a_bad_peer_and_reconnects(tmp_path: Path) -> None:
    path = str(tmp_path / "nri.sock")
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(path)
    srv.listen()
    srv.settimeout(10)
    stub = Stub(RecordingPlugin(), name="vfhotplug", idx="10", socket_path=path, max_backoff_s=0.2)
    runner = stub.start()
    first, _ = srv.accept()
    bad = FakeRuntime(first)
    bad.accept_registration()
    bad.send_bytes(b"\x00\x00\x00\x00garbage!")  # conn id 0: protocol error
    second, _ = srv.accept()  # the plugin came back by itself
    rt = FakeRuntime(second)
    rt.accept_registration()
    assert rt.configure().events == 0x1 | 0x2 | 0x8
    deadline = time.monotonic() + 5
    while stub.registrations < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert stub.registrations == 2
    stub.stop()
    runner.join(5)
    first.close()
    second.close()
    srv.close()


def test_preregistered_mode_takes_fd_name_and_index_from_the_environment() -> None:
    a, b = socket.socketpair()
    env = {
        "NRI_PLUGIN_SOCKET": str(os.dup(a.fileno())),
        "NRI_PLUGIN_NAME": "vfhotplug",
        "NRI_PLUGIN_IDX": "07",
    }
    a.close()
    stub = Stub(RecordingPlugin(), environ=env)
    assert stub.preregistered
    runner = threading.Thread(target=stub.run, daemon=True)
    runner.start()
    rt = FakeRuntime(b)
    reg = rt.accept_registration()
    assert (reg.plugin_name, reg.plugin_idx) == ("vfhotplug", "07")
    b.close()
    runner.join(5)
    assert not runner.is_alive()  # a pre-registered plugin has nothing to reconnect to


@pytest.mark.parametrize(("name", "idx"), [("", "10"), ("x", "1"), ("x", "100"), ("x", "ab")])
def test_bad_name_or_index_is_refused(name: str, idx: str) -> None:
    with pytest.raises(StubError):
        Stub(RecordingPlugin(), name=name, idx=idx, environ={})
