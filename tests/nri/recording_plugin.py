"""A test NRI plugin that records what it receives (JSON lines) and adjusts containers on request.

Runs in-process (tests construct `RecordingNriPlugin`) or as its own process (`main()`), e.g. as a
pre-registered plugin started by containerd: its config text (from the NRI conf dir) names the record file.
Pod annotations steer it: `test.vfhotplug.io/fail` makes RunPodSandbox fail with that text,
`test.vfhotplug.io/adjust-bytes` asks for an annotation of that size on CreateContainer.
"""

from __future__ import annotations

import argparse
import json
import logging
import threading
from pathlib import Path
from typing import Any

from nri_plugin.plugin_service import EventContext
from nri_plugin.stub import Stub
from vm_side.runtime_model import ContainerAdjustment, ContainerInfo, Device, Mount, PodInfo

FAIL = "test.vfhotplug.io/fail"
ADJUST_BYTES = "test.vfhotplug.io/adjust-bytes"
MOUNT_SOURCE = "test.vfhotplug.io/mount-source"


class RecordingNriPlugin:
    def __init__(self, record_file: Path | None = None) -> None:
        self.record_file = record_file
        self.records: list[dict[str, Any]] = []
        self.lock = threading.Lock()

    def _record(self, **entry: Any) -> None:
        with self.lock:
            self.records.append(entry)
            if self.record_file is not None:
                with self.record_file.open("a") as f:
                    f.write(json.dumps(entry) + "\n")

    def of(self, event: str) -> list[dict[str, Any]]:
        with self.lock:
            return [r for r in self.records if r["event"] == event]

    def configure(self, config: str, runtime_name: str, runtime_version: str) -> None:
        if config.strip() and self.record_file is None:
            self.record_file = Path(config.strip())
        self._record(event="configure", runtime=runtime_name, version=runtime_version)

    def synchronize(self, pods: list[PodInfo], containers: list[ContainerInfo], ctx: EventContext) -> None:
        self._record(
            event="synchronize", pods={p.uid: p.netns for p in pods}, containers=[c.id for c in containers]
        )

    def _pod(self, event: str, pod: PodInfo) -> None:
        self._record(
            event=event, uid=pod.uid, name=pod.name, annotations=dict(pod.annotations), netns=pod.netns
        )

    def run_pod_sandbox(self, pod: PodInfo, ctx: EventContext) -> None:
        self._pod("run", pod)
        if FAIL in pod.annotations:
            raise RuntimeError(pod.annotations[FAIL])

    def stop_pod_sandbox(self, pod: PodInfo, ctx: EventContext) -> None:
        self._pod("stop", pod)

    def remove_pod_sandbox(self, pod: PodInfo, ctx: EventContext) -> None:
        self._pod("remove", pod)

    def create_container(
        self, pod: PodInfo, container: ContainerInfo, ctx: EventContext
    ) -> ContainerAdjustment:
        self._record(event="create", uid=pod.uid, container=container.id, name=container.name)
        annotations = {"vfhotplug.io/test": "adjusted"}
        if ADJUST_BYTES in pod.annotations:
            annotations["vfhotplug.io/bulk"] = "b" * int(pod.annotations[ADJUST_BYTES])
        mounts: tuple[Mount, ...] = ()
        if MOUNT_SOURCE in pod.annotations:
            mounts = (Mount("/etc/vfhotplug-test", pod.annotations[MOUNT_SOURCE]),)
        return ContainerAdjustment(
            annotations=annotations,
            env={"VFHOTPLUG_TEST": f"pod={pod.uid}"},
            mounts=mounts,
            devices=(Device("/dev/vfhotplug-null", major=1, minor=3, file_mode=0o666),),
        )


def main() -> None:
    parser = argparse.ArgumentParser(description="NRI plugin that records events (tests only)")
    parser.add_argument("--socket", help="runtime NRI socket (external mode)")
    parser.add_argument("--name", default=None)
    parser.add_argument("--idx", default=None)
    parser.add_argument("--record", type=Path, default=None)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    plugin = RecordingNriPlugin(args.record)
    kwargs: dict[str, Any] = {"name": args.name, "idx": args.idx}
    if args.socket:
        kwargs["socket_path"] = args.socket
    Stub(plugin, **kwargs).run()


if __name__ == "__main__":
    main()
