"""The NRI handlers of vfhotplug: thin translations from NRI events to the pod lifecycle.

Decisions live in PodLifecycle (shared with the OCI hooks); this module only picks what each event carries
and maps the lifecycle's errors to NRI failures (the stub turns an exception into an error status that
names the pod, and for RunPodSandbox that fails the pod).
"""

from __future__ import annotations

import logging
import threading
import time

from nri_plugin.plugin_service import EventContext
from vm_side.demand import ANNOTATION
from vm_side.lifecycle import PodError, PodLifecycle
from vm_side.runtime_model import ContainerAdjustment, ContainerInfo, PodInfo

log = logging.getLogger(__name__)


class VfPlugin:
    def __init__(self, lifecycle: PodLifecycle) -> None:
        self.lifecycle = lifecycle

    def synchronize(self, pods: list[PodInfo], containers: list[ContainerInfo], ctx: EventContext) -> None:
        """After (re)connecting: finish or undo half-done pods, release vanished ones, sync the host.

        Host calls are cut short at the runtime's deadline; what they leave owed goes to the journal."""
        report = self.lifecycle.reconcile({p.uid: p.netns or "" for p in pods}, deadline=ctx.deadline)
        # containerd 1.7 starts a pod anyway when the plugin dies in the middle of its RunPodSandbox;
        # reconcile undid such half-done pods, so give them their VFs now, after answering the runtime.
        live = {p.uid: p for p in pods}
        redo = [live[uid] for uid in report.undone if uid in live and ANNOTATION in live[uid].annotations]
        if redo:
            threading.Thread(target=self._finish, args=(redo,), name="nri-finish", daemon=True).start()
        log.info(
            "synchronized with %d pods: kept %d, undone %d, releases owed %d, host synced %s",
            len(pods),
            len(report.kept),
            len(report.undone),
            report.owed,
            report.synced,
        )

    def _finish(self, pods: list[PodInfo]) -> None:
        for pod in pods:
            deadline = time.monotonic() + 2 * self.lifecycle.config.host_timeout_s
            try:
                self.lifecycle.prepare(
                    pod.uid, f"{pod.namespace}/{pod.name}", pod.netns or "", pod.annotations, deadline
                )
                log.info("pod %s: VFs given after a plugin restart", pod.ref)
            except PodError as e:
                log.error("pod %s runs without its VFs: %s", pod.ref, e)

    def run_pod_sandbox(self, pod: PodInfo, ctx: EventContext) -> None:
        if ANNOTATION not in pod.annotations:
            return  # no demand: no host call, no file, nothing to cache
        self.lifecycle.prepare(
            pod.uid, f"{pod.namespace}/{pod.name}", pod.netns or "", pod.annotations, ctx.deadline
        )

    def create_container(
        self, pod: PodInfo, container: ContainerInfo, ctx: EventContext
    ) -> ContainerAdjustment | None:
        return self.lifecycle.adjustment(pod.uid, ctx.runtime)

    def stop_pod_sandbox(self, pod: PodInfo, ctx: EventContext) -> None:
        self.lifecycle.release(pod.uid, ctx.deadline)

    def remove_pod_sandbox(self, pod: PodInfo, ctx: EventContext) -> None:
        self.lifecycle.release(pod.uid, ctx.deadline)
