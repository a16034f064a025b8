"""The stub against containerd 2.1 (NRI v0.8) on the wire: split Synchronize, timeouts in Configure, pod
IPs, CDI devices, and a subscription mask limited to the events the runtime knows."""

from __future__ import annotations

import logging
import socket
from pathlib import Path

import pytest

from nri_plugin.framing import MAX_TTRPC_DATA
from nri_plugin.nri_pb import nri_pb2 as nri
from nri_plugin.plugin_service import EventContext
from nri_plugin.stub import Stub
from tests.nri.event_plugins import EveryEventPlugin, Wires, pod_pb
from tests.nri.fake_runtime import FakeRuntime
from tests.nri.runtime_peers import Containerd21, Containerd23
from vm_side.runtime_model import ContainerUpdate, PodInfo

CDI = ("vfhotplug.io/vf=0000:3b:02.1", "vfhotplug.io/vf=0000:3b:02.2")


def test_split_synchronize_over_4_mib_reaches_the_handler_once(wires: Wires) -> None:
    updates = [ContainerUpdate("c-3"), ContainerUpdate("c-7", ignore_failure=True)]
    plugin = EveryEventPlugin(updates=updates)
    rt, stub = wires.connect(Containerd21, plugin)
    rt.handshake()
    pods = [pod_pb(f"u{i:02d}", bulk="x" * (200 << 10)) for i in range(48)]
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
    pods = [pod_pb(f"big{i}", bulk="x" * (200 << 10)) for i in range(12)]
    with pytest.raises(AssertionError, match=r"part failed: 8 .*1048576 bytes"):
        rt.synchronize(pods, [], max_message=1 << 20)
    assert plugin.synced == []
    # the refused parts are gone: the next synchronization holds only its own pods
    rt.synchronize([pod_pb("small")], [])
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
    part = nri.SynchronizeRequest(pods=[pod_pb("gone1"), pod_pb("gone2")], more=True)
    answer = nri.SynchronizeResponse.FromString(first.call("Synchronize", part.SerializeToString()).payload)
    assert answer.more
    first.sock.close()  # containerd restarts in the middle of the parts

    second = Containerd21(srv.accept()[0])
    second.accept_registration()
    second.handshake()
    second.synchronize([pod_pb("live")], [nri.Container(id="c-live", pod_sandbox_id="sb-live")])
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
        reply = rt.state_change(nri.RUN_POD_SANDBOX, pod_pb("slow", **{"test/sleep": "0.15"}))
    assert reply is not None and reply.code == 0
    warnings = [r.getMessage() for r in caplog.records if "budget" in r.getMessage()]
    assert len(warnings) == 1 and "default/p-slow (uid slow)" in warnings[0] and "0.20s budget" in warnings[0]
    # without timeout_nano the configured timeout still rules, not the 2 s default
    ev = nri.StateChangeEvent(event=nri.RUN_POD_SANDBOX, pod=pod_pb("quick")).SerializeToString()
    assert rt.call("StateChange", ev, timeout_nano=0).code == 0
    budgets = {uid: ctx.budget_s for _, uid, _, ctx in plugin.calls}
    assert budgets["quick"] == 0.2 and budgets["slow"] <= 0.2
    assert stub.runtime_info.request_timeout_s == 0.2


def test_without_timeouts_in_configure_the_budget_is_2_s(wires: Wires) -> None:
    plugin = EveryEventPlugin()
    rt, stub = wires.connect(FakeRuntime, plugin)
    rt.configure(runtime_name="containerd", runtime_version="1.7.24~ds1")
    ev = nri.StateChangeEvent(event=nri.RUN_POD_SANDBOX, pod=pod_pb("old")).SerializeToString()
    assert rt.call("StateChange", ev, timeout_nano=0).code == 0
    ctx = plugin.calls[0][3]
    assert ctx.budget_s == 2.0 and ctx.runtime.nri_version == (0, 6, 1) and not ctx.runtime.timeouts_sent
    assert stub.runtime_info.registration_timeout_s == 5.0


def test_pod_ips_reach_podinfo(wires: Wires) -> None:
    plugin = EveryEventPlugin()
    rt, _ = wires.connect(Containerd21, plugin)
    rt.handshake()
    pod = pod_pb("ip")
    pod.ips.extend(["10.244.1.7", "fd00:10:244:1::7"])
    rt.state_change(nri.RUN_POD_SANDBOX, pod)
    rt.synchronize([pod], [])
    assert plugin.pods[0].ips == ("10.244.1.7", "fd00:10:244:1::7")
    assert plugin.synced[0][0][0].ips == ("10.244.1.7", "fd00:10:244:1::7")


def _create(rt: FakeRuntime, uid: str) -> tuple[int, str, nri.CreateContainerResponse]:
    req = nri.CreateContainerRequest(pod=pod_pb(uid), container=nri.Container(id="c-" + uid))
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
