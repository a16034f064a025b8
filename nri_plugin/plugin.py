"""The NRI handlers of vfhotplug: thin translations from NRI events to the pod lifecycle.

Decisions live in PodLifecycle (shared with the OCI hooks); this module only picks what each event carries
and maps the lifecycle's errors to NRI failures (the stub turns an exception into an error status that
names the pod, and for RunPodSandbox that fails the pod).
"""

from __future__ import annotations

import logging

from nri_plugin.late_vfs import LateVfs
from nri_plugin.plugin_service import EventContext
from vm_side.demand import ANNOTATION
from vm_side.lifecycle import PodLifecycle
from vm_side.runtime_model import ContainerAdjustment, ContainerInfo, PodInfo

log = logging.getLogger(__name__)


class VfPlugin:
    def __init__(self, lifecycle: PodLifecycle) -> None:
        self.lifecycle = lifecycle
        self.late = LateVfs(lifecycle)

    def synchronize(self, pods: list[PodInfo], containers: list[ContainerInfo], ctx: EventContext) -> None:
        """After (re)connecting: finish or undo half-done pods, release vanished ones, sync the host.

        Host calls are cut short at the runtime's deadline; what they leave owed goes to the journal."""
        report = self.lifecycle.reconcile({p.uid: p.netns or "" for p in pods}, deadline=ctx.deadline)
        # containerd starts a pod anyway when the plugin dies in the middle of its RunPodSandbox, and
        # without asking when the plugin is not registered at all; reconcile undid half-done pods, so every
        # live pod that asks for VFs and has no ready record gets them now, after answering the runtime.
        kept = set(report.kept)
        self.late.replace(p for p in pods if ANNOTATION in p.annotations and p.uid not in kept)
        log.info(
            "synchronized with %d pods: kept %d, undone %d, releases owed %d, host synced %s",
            len(pods),
            len(report.kept),
            len(report.undone),
            report.owed,
            report.synced,
        )

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
        self.late.forget(pod.uid)
        self.lifecycle.release(pod.uid, ctx.deadline)

    def remove_pod_sandbox(self, pod: PodInfo, ctx: EventContext) -> None:
        self.late.forget(pod.uid)
        self.lifecycle.release(pod.uid, ctx.deadline)
