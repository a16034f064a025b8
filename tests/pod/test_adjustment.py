import json
from dataclasses import replace

import pytest

from contract.host_api import GrantedVf
from contract.pci import PciAddress
from vm_side.adjustment import (
    adjustment_for,
    build_adjustment,
    container_notes,
    device_info_files,
    pod_cdi_spec,
    pool_env_name,
)
from vm_side.demand import Mode, VfSlot
from vm_side.pod_record import PodRecord, PodState, StepDone, VfBinding
from vm_side.runtime_model import Device, Mount, RuntimeInfo, runtime_info


def vf(i: int, pool: str, mode: Mode, group: str | None = None) -> VfBinding:
    gpci = PciAddress(0, 0x10 + i, 0, 0)
    grant = GrantedVf(f"L{i}", pool, PciAddress(0, 0x3B, 2, i), gpci, f"02:fe:00:00:00:0{i}", 10 * i, None, i)
    dev = (511, int(group)) if group else None
    return VfBinding(
        VfSlot(i, pool, mode, f"net{i + 1}"), grant, gpci, bound=True, iommu_group=group, vfio_group_dev=dev
    )


REC = PodRecord(
    "u1",
    "ns/p",
    "/run/netns/p",
    PodState.READY,
    1,
    "u1/1",
    (),
    (vf(0, "fast", Mode.DPDK, "16"), vf(1, "fast", Mode.DPDK, "16"), vf(2, "mgmt-1", Mode.KERNEL)),
    vfio_container_dev=(10, 196),
    run_dir="/run/vfhotplug/pods/u1",
    steps=(
        StepDone(
            "dpdk env",
            {
                "file_prefix": "vfhx",
                **container_notes(
                    [
                        Mount("/var/run/dpdk", "/run/vfhotplug/dpdk/u1", options=("rbind", "rw")),
                        Mount("/dev/hugepages", "/mnt/huge", options=("rbind", "rw")),
                    ],
                    [("VFHOTPLUG_DPDK_FILE_PREFIX", "vfhx")],
                ),
            },
        ),
    ),
)


def test_dpdk_and_kernel_vfs():
    adj = build_adjustment(REC)
    # Two VFs in one IOMMU group need the group node once.
    assert adj.devices == (
        Device("/dev/vfio/vfio", 10, 196, file_mode=0o666),
        Device("/dev/vfio/16", 511, 16, file_mode=0o666),
    )
    env = dict(adj.env)
    assert env["PCIDEVICE_VFHOTPLUG_IO_FAST"] == "0000:10:00.0,0000:11:00.0"
    assert env["PCIDEVICE_VFHOTPLUG_IO_MGMT_1"] == "0000:12:00.0"
    assert env["VFHOTPLUG_IFNAMES"] == "net1,net2,net3"
    assert env["VFHOTPLUG_MODES"] == "dpdk,dpdk,kernel"
    assert env["VFHOTPLUG_DPDK_FILE_PREFIX"] == "vfhx"  # from the step's notes
    assert adj.mounts == (
        Mount("/var/run/k8s.cni.cncf.io/devinfo/dp", "/run/vfhotplug/pods/u1/devinfo"),
        Mount("/var/run/dpdk", "/run/vfhotplug/dpdk/u1", options=("rbind", "rw")),
        Mount("/dev/hugepages", "/mnt/huge", options=("rbind", "rw")),
    )
    status = json.loads(dict(adj.annotations)["vfhotplug.io/status"])
    assert status[2] == {
        "ifname": "net3",
        "mode": "kernel",
        "pool": "mgmt-1",
        "pci": "0000:12:00.0",
        "mac": "02:fe:00:00:00:02",
        "vlan": 20,
        "lease": "L2",
    }


def test_kernel_only_pod_has_no_devices_and_no_dpdk_mounts():
    rec = replace(REC, vfs=(REC.vfs[2],), vfio_container_dev=None, steps=())
    adj = build_adjustment(rec)
    assert adj.devices == ()
    assert [m.destination for m in adj.mounts] == ["/var/run/k8s.cni.cncf.io/devinfo/dp"]


def test_device_info_follows_the_npwg_layout():
    files = device_info_files(REC)
    assert json.loads(files["vfhotplug.io-fast-0000:10:00.0-device.json"]) == {
        "type": "pci",
        "version": "1.1.0",
        "pci": {"pci-address": "0000:10:00.0"},
    }
    assert len(files) == 3


def test_only_ready_pods_get_an_adjustment():
    with pytest.raises(ValueError, match="is preparing, not ready"):
        build_adjustment(replace(REC, state=PodState.PREPARING))


def test_pool_env_name():
    assert pool_env_name("sriov.net-a") == "PCIDEVICE_VFHOTPLUG_IO_SRIOV_NET_A"


def test_cdi_devices_for_runtimes_that_read_them():
    inline = build_adjustment(REC)
    v08 = runtime_info("containerd", "2.1.9")
    adj = adjustment_for(REC, v08)
    assert adj.cdi_devices == ("vfhotplug.io/vf=u1-net1", "vfhotplug.io/vf=u1-net2")
    assert not adj.devices and not adj.env and not adj.mounts  # the runtime takes them from the spec
    assert adj.annotations == inline.annotations
    spec = pod_cdi_spec(REC)
    assert spec is not None and spec.qualified_names() == adj.cdi_devices
    # containerd 1.7.24 (v0.6.1) and the OCI hooks: everything inline, no CDI names
    assert adjustment_for(REC, RuntimeInfo()) == inline
    assert adjustment_for(REC, None) == inline
    # a pod without dpdk VFs has no CDI devices on any runtime
    kernel = replace(REC, vfs=(REC.vfs[2],), vfio_container_dev=None, steps=())
    assert pod_cdi_spec(kernel) is None
    assert adjustment_for(kernel, v08) == build_adjustment(kernel)
