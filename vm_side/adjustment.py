"""What every container of a pod gets from its VFs (pure): devices, env, mounts, annotations.

Independent of protobuf: the NRI layer converts `Adjustment` to a ContainerAdjustment and the OCI hooks
write it into config.json. Datapath steps (VPP memif wiring, the DPDK env) add mounts and env through
their notes in the pod record (`container_notes`), so one record says everything a container gets.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping

from vm_side.cdi_spec import CdiSpec, build_cdi_spec, cdi_device_names
from vm_side.demand import Mode
from vm_side.pod_record import PodRecord, PodState, VfBinding
from vm_side.runtime_model import ContainerAdjustment, Device, Mount, RuntimeInfo, supports_cdi_devices

STATUS_ANNOTATION = "vfhotplug.io/status"
ENV_PREFIX = "PCIDEVICE_VFHOTPLUG_IO_"  # the SR-IOV device plugin's PCIDEVICE_<resource> convention
DEVINFO_DIR = "/var/run/k8s.cni.cncf.io/devinfo/dp"  # where NPWG device-info consumers look
DEVINFO_VERSION = "1.1.0"
DEVINFO_SUBDIR = "devinfo"
# Step note keys (JSON) with what the step gives every container of the pod.
NOTE_MOUNTS = "container_mounts"
NOTE_ENV = "container_env"


def pool_env_name(pool: str) -> str:
    return ENV_PREFIX + re.sub(r"[^A-Z0-9]", "_", pool.upper())


def devinfo_name(vf: VfBinding) -> str:
    """File name per the spec's `<resource>-<device id>-device.json` pattern."""
    return f"vfhotplug.io-{vf.grant.pool}-{vf.guest_pci}-device.json"


def device_info(vf: VfBinding) -> str:
    """The Network Plumbing WG device-info (v1.1.0) document for one VF."""
    doc = {"type": "pci", "version": DEVINFO_VERSION, "pci": {"pci-address": str(vf.guest_pci)}}
    return json.dumps(doc, sort_keys=True)


def device_info_files(rec: PodRecord) -> dict[str, str]:
    return {devinfo_name(vf): device_info(vf) for vf in rec.vfs}


def container_notes(mounts: Iterable[Mount], env: Iterable[tuple[str, str]]) -> dict[str, str]:
    """Step notes carrying mounts and env for the pod's containers (read back by `build_adjustment`)."""
    return {
        NOTE_MOUNTS: json.dumps([[m.destination, m.source, m.type, list(m.options)] for m in mounts]),
        NOTE_ENV: json.dumps(dict(env)),
    }


def _from_notes(notes: Mapping[str, str]) -> tuple[list[Mount], list[tuple[str, str]]]:
    mounts = [Mount(d, s, t, tuple(o)) for d, s, t, o in json.loads(notes.get(NOTE_MOUNTS, "[]"))]
    return mounts, list(json.loads(notes.get(NOTE_ENV, "{}")).items())


def build_adjustment(rec: PodRecord) -> ContainerAdjustment:
    """The adjustment for any container of a ready pod.

    Raises:
        ValueError: the record is not ready (the caller must not start containers of such a pod).
    """
    if rec.state is not PodState.READY:
        raise ValueError(f"pod {rec.pod_name} ({rec.pod_uid}) is {rec.state}, not ready")
    vfio = [vf for vf in rec.vfs if vf.slot.mode is Mode.DPDK]
    devices: list[Device] = []
    if vfio:
        if rec.vfio_container_dev is None:
            raise ValueError(f"pod {rec.pod_uid}: dpdk VFs but no /dev/vfio/vfio numbers recorded")
        devices.append(Device("/dev/vfio/vfio", *rec.vfio_container_dev, file_mode=0o666))
        groups: dict[str, tuple[int, int]] = {}
        for vf in vfio:
            if vf.iommu_group is None or vf.vfio_group_dev is None:
                raise ValueError(f"pod {rec.pod_uid}: VF {vf.guest_pci} has no vfio group recorded")
            groups[vf.iommu_group] = vf.vfio_group_dev
        devices.extend(Device(f"/dev/vfio/{g}", *groups[g], file_mode=0o666) for g in sorted(groups))

    by_pool: dict[str, list[str]] = {}
    for vf in rec.vfs:
        by_pool.setdefault(vf.grant.pool, []).append(str(vf.guest_pci))
    env = [(pool_env_name(pool), ",".join(pcis)) for pool, pcis in sorted(by_pool.items())]
    env += [
        ("VFHOTPLUG_COUNT", str(len(rec.vfs))),
        ("VFHOTPLUG_IFNAMES", ",".join(vf.slot.ifname for vf in rec.vfs)),
        ("VFHOTPLUG_PCI_ADDRESSES", ",".join(str(vf.guest_pci) for vf in rec.vfs)),
        ("VFHOTPLUG_MACS", ",".join(vf.grant.mac for vf in rec.vfs)),
        ("VFHOTPLUG_MODES", ",".join(vf.slot.mode.value for vf in rec.vfs)),
        ("VFHOTPLUG_DEVINFO_DIR", DEVINFO_DIR),
    ]

    mounts: list[Mount] = []
    if rec.run_dir is not None:
        mounts.append(Mount(DEVINFO_DIR, f"{rec.run_dir}/{DEVINFO_SUBDIR}"))
    for step in rec.steps:
        step_mounts, step_env = _from_notes(step.notes)
        mounts += step_mounts
        env += step_env

    status = [
        {
            "ifname": vf.slot.ifname,
            "mode": vf.slot.mode.value,
            "pool": vf.grant.pool,
            "pci": str(vf.guest_pci),
            "mac": vf.grant.mac,
            "vlan": vf.grant.vlan,
            "lease": vf.grant.lease_id,
        }
        for vf in rec.vfs
    ]
    return ContainerAdjustment(
        annotations={STATUS_ANNOTATION: json.dumps(status, sort_keys=True)},
        env=dict(env),
        mounts=tuple(mounts),
        devices=tuple(devices),
    )


def pod_cdi_spec(rec: PodRecord) -> CdiSpec | None:
    """The pod's CDI spec (its devices, env and mounts as CDI edits); None for a pod without dpdk VFs.

    Raises:
        ValueError: as `build_adjustment`; CdiSpecError when the spec would break a CDI rule.
    """
    if not cdi_device_names(rec):
        return None
    return build_cdi_spec(rec, build_adjustment(rec))


def adjustment_for(rec: PodRecord, runtime: RuntimeInfo | None) -> ContainerAdjustment:
    """What a container of a ready pod gets from `runtime`: the one place the CDI choice is made.

    A runtime that reads NRI's CDI_devices (v0.8+) is given the pod's CDI device names, and injects
    nodes, env and mounts from the pod's spec (written at prepare); an older one (containerd 1.7.24), or
    the OCI hooks (`runtime` None: they write config.json themselves), get them inline. The status
    annotation is inline either way: CDI specs before 0.6.0 carry no annotations for the container.
    """
    inline = build_adjustment(rec)
    names = cdi_device_names(rec)
    if runtime is None or not names or not supports_cdi_devices(runtime):
        return inline
    return ContainerAdjustment(annotations=inline.annotations, cdi_devices=names)
