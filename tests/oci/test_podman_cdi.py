"""CDI devices through Debian's real podman 4.3, with no hook registered: `vfhotplug-hook cdi` takes dpdk VFs
for an id and writes their spec into /var/run/cdi (podman 4.3 reads only /etc/cdi and /var/run/cdi), and
`podman run --device vfhotplug.io/vf=<id>-net1` gets the /dev/vfio nodes, env and mounts from it.

The guest kernel is the simulated one (FakeSysfsKernel: vfio-pci cannot bind on this machine), so the group
node's numbers are the simulation's; runc creates the nodes in the container from the spec's numbers."""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.oci import bed as oci_bed
from tests.oci.podman import Podman, missing, podman_bed
from tests.pod.fakes import VFIO_GROUP_MAJOR, VFIO_MISC
from vm_side.cdi_store import CdiStore

pytestmark = pytest.mark.skipif(bool(missing()), reason=str(missing()))
PODMAN_CDI_DIR = Path("/var/run/cdi")


@pytest.fixture
def podman() -> Iterator[Podman]:
    made = not PODMAN_CDI_DIR.exists()
    try:
        with oci_bed.bed(cdi_dir=PODMAN_CDI_DIR) as b, podman_bed(b, hooks=False) as p:
            yield p
    finally:
        if made and PODMAN_CDI_DIR.exists() and not any(PODMAN_CDI_DIR.iterdir()):
            PODMAN_CDI_DIR.rmdir()


def test_podman_device_from_our_spec_sees_nodes_env_and_mounts(podman: Podman) -> None:
    bed, store = podman.bed, CdiStore(PODMAN_CDI_DIR)
    vid = f"vfh-t-{uuid.uuid4().hex[:8]}"
    try:
        out = bed.hook_cmd("cdi", vid, '[{"mode": "dpdk"}]', sim=True).stdout.split()
        assert out == [f"vfhotplug.io/vf={vid}-net1"]
        (lease,) = bed.host.leases_of(vid)
        assert lease.guest_pci is not None
        group = Path(os.readlink(bed.guest.sysfs / "bus/pci/devices" / lease.guest_pci / "iommu_group")).name
        assert json.loads(store.path(vid).read_text())["cdiVersion"] == "0.4.0"

        podman.run("c", "--device", out[0])
        assert podman.hook_runs() == 0  # no hook at all: everything came from the spec
        nodes = podman("exec", "c", "stat", "-c", "%n %t:%T", "/dev/vfio/vfio", f"/dev/vfio/{group}").stdout
        assert nodes.split("\n")[:2] == [
            f"/dev/vfio/vfio {VFIO_MISC[0]:x}:{VFIO_MISC[1]:x}",
            f"/dev/vfio/{group} {VFIO_GROUP_MAJOR:x}:{int(group):x}",
        ]
        raw = podman("exec", "c", "cat", "/proc/1/environ").stdout
        env = dict(e.split("=", 1) for e in raw.split("\0") if "=" in e)
        assert env["VFHOTPLUG_MODES"] == "dpdk" and env["VFHOTPLUG_PCI_ADDRESSES"] == lease.guest_pci
        assert env["PCIDEVICE_VFHOTPLUG_IO_DEFAULT"] == lease.guest_pci
        mounts = podman("exec", "c", "cat", "/proc/mounts").stdout
        assert "/var/run/dpdk" in mounts and "/var/run/k8s.cni.cncf.io/devinfo/dp" in mounts
        devinfo = podman("exec", "c", "sh", "-c", "cat /var/run/k8s.cni.cncf.io/devinfo/dp/*").stdout
        assert json.loads(devinfo)["pci"]["pci-address"] == lease.guest_pci

        podman("rm", "-f", "-t", "0", "c")
        bed.hook_cmd("release", vid, sim=True)
        assert not store.path(vid).exists()
        assert bed.host.leases_of(vid) == [] and bed.guest.records() == []
    finally:
        store.remove(vid)


def test_cdi_refuses_kernel_mode_without_taking_vfs(podman: Podman) -> None:
    bed = podman.bed
    res = bed.hook_cmd("cdi", "vfh-k", '[{"mode": "kernel"}]', sim=True, check=False)
    assert res.returncode == 1
    assert "CDI devices are vfio nodes" in res.stderr and "vfhotplug.io/vfs annotation" in res.stderr
    assert bed.host.leases() == [] and not CdiStore(PODMAN_CDI_DIR).path("vfh-k").exists()
