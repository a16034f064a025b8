"""The datapath steps of the pod lifecycle: ``dpdk`` mode gets a per-pod DPDK environment, ``vpp`` mode
(`vpp_step`, imported only when a [vpp] table configures VPP) hands the pod's VFs to the VM's VPP with a
memif into the pod. Both record in their step notes what undo needs and what the pod's containers get
(mounts, env; see `adjustment.container_notes`).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from contract.crash_points import NO_CRASHES, CrashPoints
from contract.pci import PciAddress
from vm_side.adjustment import container_notes
from vm_side.config import PluginConfig
from vm_side.demand import Mode
from vm_side.dpdk_env import DpdkEnvs, plan_dpdk_env
from vm_side.pod_record import PodRecord
from vm_side.pod_steps import PodStep

DPDK_STEP = "dpdk env"
NOTE_TELEMETRY = "telemetry_socket"
NOTE_PREFIX = "file_prefix"


def vfs_of(rec: PodRecord, mode: Mode) -> list[PciAddress]:
    out = []
    for vf in rec.vfs:
        if vf.slot.mode is mode:
            if vf.guest_pci is None:
                raise ValueError(f"VF MAC {vf.grant.mac} of pod {rec.pod_uid} has no guest PCI address")
            out.append(vf.guest_pci)
    return out


def step_notes(rec: PodRecord, step: str) -> Mapping[str, str] | None:
    return next((d.notes for d in rec.steps if d.name == step), None)


class DpdkEnvStep:
    """``dpdk`` mode: the pod's own file prefix, runtime folder (its /var/run/dpdk) and EAL arguments."""

    name = DPDK_STEP

    def __init__(self, envs: DpdkEnvs) -> None:
        self.envs = envs

    def handles(self, mode: Mode) -> bool:
        return mode is Mode.DPDK

    def apply(self, rec: PodRecord, deadline: float) -> dict[str, str]:
        env = self.envs.prepare(rec.pod_uid, vfs_of(rec, Mode.DPDK))
        return {
            NOTE_PREFIX: env.file_prefix,
            NOTE_TELEMETRY: str(env.telemetry_socket),
            **container_notes(env.mounts, env.env),
        }

    def undo(self, rec: PodRecord, notes: Mapping[str, str]) -> None:
        # Re-planned from the uid, not taken from the notes: cleanup then cannot be pointed elsewhere.
        self.envs.cleanup(plan_dpdk_env(rec.pod_uid, (), self.envs.runtime_root, self.envs.hugepage_dir))


def telemetry_socket(rec: PodRecord) -> Path | None:
    notes = step_notes(rec, DPDK_STEP)
    return None if notes is None or NOTE_TELEMETRY not in notes else Path(notes[NOTE_TELEMETRY])


def steps_from_config(cfg: PluginConfig, crash_points: CrashPoints = NO_CRASHES) -> list[PodStep]:
    """The DPDK env always; VPP when [vpp] is configured (without it, vpp pods are refused). The NRI
    plugin and the OCI hooks build the same steps from the same config."""
    steps: list[PodStep] = [DpdkEnvStep(DpdkEnvs(cfg.dpdk.runtime_root, cfg.dpdk.hugepages))]
    if cfg.vpp is not None:
        from vm_side.vpp import Vpp  # with vpp_papi behind it: a config without VPP never loads them
        from vm_side.vpp_pod import VppPods
        from vm_side.vpp_step import VppStep

        vpp = Vpp(cfg.vpp.socket, api_dirs=cfg.vpp.api_dirs)
        steps.append(VppStep(VppPods(vpp, cfg.vpp.memif_dir), crash_points=crash_points))
    return steps
