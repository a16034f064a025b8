"""What was done for a pod so far, with what is needed to undo it, and its JSON form (pure).

A pod record holds the netns path (Stop and Remove events do not carry it), the granted VFs, per-VF binding
progress, original names and drivers, and the pluggable steps that completed.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field, replace
from enum import StrEnum
from typing import Any

from contract.host_api import GrantedVf
from contract.pci import PciAddress
from vm_side.demand import Mode, VfSlot

_UID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")
# Inside the records folder both entries share (the NRI plugin's and the OCI hooks').
PODS_SUBDIR = "pods"
JOURNAL_SUBDIR = "journal"


class PodState(StrEnum):
    PREPARING = "preparing"
    READY = "ready"
    RELEASING = "releasing"


class Entry(StrEnum):
    """Which entry manages a pod; both share one records folder."""

    NRI = "nri"  # a pod containerd reports: reconciled against containerd's pod list
    OCI = "oci"  # a container of the OCI hooks: containerd does not know it, its poststop releases it


@dataclass(frozen=True)
class VfBinding:
    """One granted VF and how far its binding got."""

    slot: VfSlot
    grant: GrantedVf
    guest_pci: PciAddress | None  # where the VF was found in the guest (the grant's, when the host knew it)
    guest_ifname: str | None = None  # its name in the guest netns before we moved it (kernel mode)
    original_driver: str | None = None  # recorded before a driver change (dpdk mode)
    bound: bool = False  # the mode's binding is complete
    iommu_group: str | None = None  # dpdk: the /dev/vfio node name
    vfio_group_dev: tuple[int, int] | None = None  # dpdk: major, minor of /dev/vfio/<group>


@dataclass(frozen=True)
class StepDone:
    """A pluggable step (VPP, DPDK env) that completed, with the notes its undo needs."""

    name: str
    notes: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class PodRecord:
    pod_uid: str
    pod_name: str
    netns: str
    state: PodState
    attempt: int
    request_id: str
    slots: tuple[VfSlot, ...]
    vfs: tuple[VfBinding, ...] = ()
    steps: tuple[StepDone, ...] = ()
    vfio_container_dev: tuple[int, int] | None = None  # major, minor of /dev/vfio/vfio
    run_dir: str | None = None  # per-pod folder with device-info files and the DPDK runtime folder
    entry: Entry = Entry.NRI

    def with_vf(self, vf: VfBinding) -> PodRecord:
        return replace(self, vfs=tuple(vf if v.grant.lease_id == vf.grant.lease_id else v for v in self.vfs))


class RecordError(ValueError):
    """A record file cannot be read; it is moved aside (never deleted) and the message names it."""


def check_uid(pod_uid: str) -> str:
    if not _UID_RE.fullmatch(pod_uid):
        raise ValueError(f"pod uid {pod_uid!r} cannot name a record file (letters, digits, '_', '.', '-')")
    return pod_uid


def _slot_from(raw: dict[str, Any]) -> VfSlot:
    return VfSlot(**{**raw, "mode": Mode(raw["mode"])})


def _pair(raw: list[int] | None) -> tuple[int, int] | None:
    return (int(raw[0]), int(raw[1])) if raw else None


def record_to_json(rec: PodRecord) -> str:
    # asdict turns PciAddress into a dict of ints; keep it as its sysfs spelling instead.
    raw = asdict(rec)
    for vf, b in zip(raw["vfs"], rec.vfs, strict=True):
        vf["guest_pci"] = _pci_text(b.guest_pci)
        vf["grant"]["host_pci"] = str(b.grant.host_pci)
        vf["grant"]["guest_pci"] = _pci_text(b.grant.guest_pci)
    return json.dumps(raw, indent=1, sort_keys=True)


def _pci_text(pci: PciAddress | None) -> str | None:
    return str(pci) if pci is not None else None


def _pci(text: str | None) -> PciAddress | None:
    return PciAddress.parse(text) if text else None


def record_from_json(text: str) -> PodRecord:
    raw = json.loads(text)
    vfs = tuple(
        VfBinding(
            **{
                **v,
                "slot": _slot_from(v["slot"]),
                "grant": GrantedVf(
                    **{
                        **v["grant"],
                        "host_pci": PciAddress.parse(v["grant"]["host_pci"]),
                        "guest_pci": _pci(v["grant"]["guest_pci"]),
                    }
                ),
                "guest_pci": _pci(v["guest_pci"]),
                "vfio_group_dev": _pair(v["vfio_group_dev"]),
            }
        )
        for v in raw["vfs"]
    )
    return PodRecord(
        **{
            **raw,
            "state": PodState(raw["state"]),
            "slots": tuple(_slot_from(s) for s in raw["slots"]),
            "vfs": vfs,
            "steps": tuple(StepDone(s["name"], dict(s["notes"])) for s in raw["steps"]),
            "vfio_container_dev": _pair(raw["vfio_container_dev"]),
            "entry": Entry(raw.get("entry", Entry.NRI)),  # records written before there were two entries
        }
    )
