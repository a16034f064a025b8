"""Plugins and socketpair wiring for the stub's tests against newer runtimes (`runtime_peers`)."""

from __future__ import annotations

import socket
import threading
import time
from typing import TypeVar

from nri_plugin.nri_pb import nri_pb2 as nri
from nri_plugin.plugin_service import EventContext
from nri_plugin.stub import Stub
from tests.nri.fake_runtime import FakeRuntime
from vm_side.runtime_model import ContainerAdjustment, ContainerInfo, ContainerUpdate, Device, PodInfo

P = TypeVar("P", bound=FakeRuntime)


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


def pod_pb(uid: str, **annotations: str) -> nri.PodSandbox:
    """A pod as the runtime sends it: id sb-<uid>, name p-<uid>, namespace default, its own netns."""
    pod = nri.PodSandbox(id="sb-" + uid, name="p-" + uid, uid=uid, namespace="default")
    pod.annotations.update(annotations)
    pod.linux.namespaces.add(type="network", path=f"/run/netns/{uid}")
    return pod
