"""The OCI hook handlers: thin translations from runtime stages to the shared pod lifecycle.

The container id plays the pod uid. Every decision (demand, host calls, binding, rollback, journal) is
PodLifecycle's; this module only picks what each stage carries and maps failures to `HookFailure`, whose
message is the one line a runtime shows its user.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from typing import Any

from oci_hooks.netns import NetnsError, NetnsPins
from oci_hooks.spec import (
    HookCommand,
    JsonObject,
    OciState,
    Stage,
    annotations_of,
    apply_adjustment,
    ensure_hooks,
    join_network_namespace,
    makes_network_namespace,
    network_namespace_path,
    podman_container_id,
)
from vm_side.cdi_spec import cdi_device_names
from vm_side.demand import ANNOTATION, DemandError, Mode, parse_demand
from vm_side.lifecycle import PodError, PodLifecycle
from vm_side.pod_record import Entry

log = logging.getLogger(__name__)

# Names the container a bundle was prepared for, so createRuntime can tell a mismatched `runc create` id.
PREPARED_FOR = "vfhotplug.io/prepared-for"


class HookFailure(RuntimeError):
    """A hook failed; the message is one line naming the container and the cause, for the user."""


def container_name(container_id: str) -> str:
    """How records, logs and `vfhotplug status` name a hook-managed container (NRI pods: ns/name)."""
    return f"oci/{container_id}"


class OciHooks:
    def __init__(self, lifecycle: PodLifecycle, timeout_s: float, pins: NetnsPins) -> None:
        self._lifecycle = lifecycle
        self._timeout_s = timeout_s
        self._pins = pins

    def _deadline(self) -> float:
        return time.monotonic() + self._timeout_s

    def prepare_bundle(
        self, container_id: str, config: Mapping[str, Any], hook: HookCommand
    ) -> JsonObject | None:
        """Before `runc create`: allocate and prepare, and return the config with the container's devices,
        env, mounts, annotations and our createRuntime/poststop hooks; None when it asks for no VFs."""
        annotations = annotations_of(config, "config.json")
        if ANNOTATION not in annotations:
            return None
        prepared = annotations.get(PREPARED_FOR)
        if prepared is not None and prepared != container_id:
            raise HookFailure(
                f"container {container_id}: config.json was already prepared for container {prepared}; "
                f"release it (vfhotplug-hook release {prepared}) or use a fresh bundle"
            )
        # Every edit that can fail on a malformed config is made before anything is allocated.
        pin = self._pins.path(container_id).as_posix()
        netns = network_namespace_path(config)
        if netns == pin or (netns is None and makes_network_namespace(config)):
            # Our own pinned netns, joined by the container: the VFs move in now, and the start runs no
            # createRuntime hook (a second interpreter); poststop gives everything back as before.
            base = join_network_namespace(ensure_hooks(config, hook, (Stage.POSTSTOP,)), pin)
            netns = self._pin(container_id)
        else:
            base = ensure_hooks(config, hook)
        base["annotations"] = {**annotations, PREPARED_FOR: container_id}
        try:
            return self._prepare(container_id, annotations, netns, base)
        except BaseException:
            self._unpin(container_id)  # nothing stays prepared: no namespace either
            raise

    def precreate(self, config: Mapping[str, Any]) -> JsonObject:
        """podman's precreate stage: the proposed runtime config in, the config to use out."""
        annotations = annotations_of(config, "runtime config")
        if ANNOTATION not in annotations:
            return dict(config)
        container_id = podman_container_id(config)
        if container_id is None:
            raise HookFailure(
                "precreate: the runtime config names no podman container id (linux.cgroupsPath); "
                "this stage is for podman: with runc use `vfhotplug-hook prepare BUNDLE`"
            )
        return self._prepare(container_id, annotations, network_namespace_path(config), config)

    def prepare_cdi(self, container_id: str, demand: str) -> tuple[str, ...]:
        """Gives `container_id` its dpdk VFs before any container exists and returns the qualified CDI
        device names its spec offers (`podman run --device NAME`); released by `release`.

        At least one dpdk VF and no kernel-mode one: a kernel-mode VF moves into a container's network
        namespace, which only the annotation path (createRuntime) can do."""
        annotations = {ANNOTATION: demand}
        try:
            parsed = parse_demand(annotations, self._lifecycle.config.defaults)
        except DemandError as e:
            raise HookFailure(f"container {container_id}: bad demand: {e}") from e
        if parsed is None or Mode.DPDK not in parsed.modes or Mode.KERNEL in parsed.modes:
            raise HookFailure(
                f"container {container_id}: CDI devices are vfio nodes: ask for dpdk-mode VFs (and no kernel-mode "
                "ones), e.g. "
                f'\'[{{"mode": "dpdk"}}]\'; kernel-mode VFs need the {ANNOTATION} annotation on the container'
            )
        try:
            rec = self._lifecycle.prepare(
                container_id,
                container_name(container_id),
                "",
                annotations,
                self._deadline(),
                netns_later=True,
                entry=Entry.OCI,
            )
        except PodError as e:
            raise HookFailure(_pod_message(e)) from e
        assert rec is not None  # the demand asks for VFs
        return cdi_device_names(rec)

    def create_runtime(self, state: OciState) -> None:
        """The container's namespaces exist: move its kernel-mode VFs into its network namespace."""
        if ANNOTATION not in state.annotations:
            return
        prepared = state.annotations.get(PREPARED_FOR)
        if prepared is not None and prepared != state.id:
            raise HookFailure(
                f"container {state.id}: config.json was prepared for container {prepared}; run "
                f"`vfhotplug-hook prepare --id {state.id} BUNDLE` on a fresh bundle"
            )
        rec = self._lifecycle.store.load(state.id)
        if rec is None:
            try:  # a bad annotation is the likelier cause, and the more useful line
                parse_demand(state.annotations, self._lifecycle.config.defaults)
            except DemandError as e:
                raise HookFailure(f"container {state.id}: bad demand: {e}") from e
            raise HookFailure(
                f"container {state.id} asks for VFs ({ANNOTATION}) but none were prepared: run "
                "`vfhotplug-hook prepare BUNDLE` before `runc create`, or use podman's precreate hook"
            )
        if rec.netns:
            return  # it joined an existing netns, which got its VFs at prepare
        if state.pid is None:
            raise HookFailure(f"container {state.id}: the runtime gave no pid at createRuntime")
        try:
            self._lifecycle.enter_netns(state.id, f"/proc/{state.pid}/ns/net", self._deadline())
        except PodError as e:
            raise HookFailure(_pod_message(e)) from e

    def poststop(self, state: OciState) -> None:
        """Undo everything and give the VFs back; safe twice and after a failed create."""
        self.release(state.id)

    def release(self, container_id: str) -> None:
        self._lifecycle.release(container_id, self._deadline())
        self._unpin(container_id)  # after the VFs left it
        if self._lifecycle.journal.get(container_id) is None and self._lifecycle.journal.entries():
            # The host answered just now: a good moment to settle what earlier containers still owe.
            self.release_owed()

    def release_owed(self) -> int:
        """Retry every journaled host release once; returns how many are still owed."""
        return self._lifecycle.worker.run_once(force=True)

    def _pin(self, container_id: str) -> str:
        try:
            return self._pins.make(container_id)
        except NetnsError as e:
            raise HookFailure(f"container {container_id}: {e}") from e

    def _unpin(self, container_id: str) -> None:
        try:
            self._pins.remove(container_id)
        except NetnsError as e:
            raise HookFailure(f"container {container_id}: {e}") from e

    def _prepare(
        self,
        container_id: str,
        annotations: Mapping[str, str],
        netns: str | None,
        config: Mapping[str, Any],
    ) -> JsonObject:
        try:
            self._lifecycle.prepare(
                container_id,
                container_name(container_id),
                netns or "",
                annotations,
                self._deadline(),
                netns_later=netns is None,
                entry=Entry.OCI,
            )
        except PodError as e:
            raise HookFailure(_pod_message(e)) from e
        try:
            adj = self._lifecycle.adjustment(container_id)
            if adj is None:
                raise HookFailure(f"container {container_id}: its VFs are not ready after prepare")
            return apply_adjustment(config, adj)
        except BaseException:
            # Nothing may stay allocated for a config the runtime will never see.
            self._lifecycle.release(container_id, self._deadline())
            raise


def _pod_message(e: PodError) -> str:
    return f"container {e.pod_uid}: {e.step}: {e.cause}"
