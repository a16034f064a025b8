"""The hooks through the real runc (bookworm's, from the containerd test bed) against the real host service
(sim backend, its own process): kernel and dpdk modes, bad annotations, crashes, repeats, host outages."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.oci import bed as oci_bed
from vm_side.pod_record import Entry, PodState
from vm_side.record_store import list_pod_records

pytestmark = pytest.mark.skipif(bool(oci_bed.missing()), reason=str(oci_bed.missing()))


@pytest.fixture
def bed() -> Iterator[oci_bed.Bed]:
    with oci_bed.bed() as b:
        yield b


def prepare(bed: oci_bed.Bed, cid: str, bundle: Path, sim: bool = False) -> None:
    hook = bed.sim_hook if sim else bed.hook
    bed.hook_cmd("prepare", "--id", cid, "--hook-path", str(hook), str(bundle), sim=sim)


def container_links(bed: oci_bed.Bed, cid: str) -> dict[str, str]:
    return oci_bed.parse_ip_link(bed.in_container(cid, "ip", "-o", "link"))


def stopped_state(cid: str, bundle: Path, annotations: dict[str, str]) -> str:
    """The OCI state runc hands poststop (no pid once stopped)."""
    state = {"ociVersion": "1.0.2", "id": cid, "status": "stopped", "bundle": str(bundle)}
    return json.dumps({**state, "annotations": annotations})


def pid1_env(bed: oci_bed.Bed, cid: str) -> dict[str, str]:
    raw = bed.in_container(cid, "cat", "/proc/1/environ")
    return dict(e.split("=", 1) for e in raw.split("\0") if "=" in e)


def sim_links(bed: oci_bed.Bed) -> list[str]:
    return [name for name in bed.guest.links() if name.startswith("vfsim") and not name.endswith("p")]


def assert_nothing_held(bed: oci_bed.Bed, cid: str) -> None:
    assert bed.host.leases_of(cid) == []
    assert bed.guest.records() == []
    assert bed.guest.journal() == []
    assert sim_links(bed) == []
    assert not (bed.guest.state_dir / "netns" / cid).exists()  # no pinned netns stays behind


def test_kernel_mode_container_sees_its_vfs(bed):
    bundle = bed.bundle("k1", '[{"count": 2, "mtu": 1400}]')
    prepare(bed, "k1", bundle)
    config = json.loads((bundle / "config.json").read_text())
    prepare(bed, "k1", bundle)  # a repeat changes nothing and takes nothing more
    assert json.loads((bundle / "config.json").read_text()) == config
    # The container joins a netns prepare made and pinned, with the VFs already in it: no createRuntime.
    (ns,) = [ns for ns in config["linux"]["namespaces"] if ns["type"] == "network"]
    pin = Path(ns["path"])
    assert pin.parent == bed.guest.state_dir / "netns" and pin.name == "k1"
    assert [h["args"][-1] for h in config["hooks"]["poststop"]] == ["poststop"]
    assert "createRuntime" not in config["hooks"]
    bed.runc("run", "-d", "--bundle", str(bundle), "k1")
    pid = json.loads(bed.runc("state", "k1").stdout)["pid"]
    assert os.stat(f"/proc/{pid}/ns/net").st_ino == pin.stat().st_ino

    leases = bed.host.leases_of("k1")
    assert len(leases) == 2 and {le.state for le in leases} == {"attached"}
    links = container_links(bed, "k1")
    assert {links["net1"], links["net2"]} == {le.mac for le in leases}
    assert "mtu 1400" in bed.in_container("k1", "ip", "-o", "link", "show", "net1")
    env = pid1_env(bed, "k1")
    assert env["VFHOTPLUG_COUNT"] == "2" and env["VFHOTPLUG_IFNAMES"] == "net1,net2"
    assert sorted(env["VFHOTPLUG_MACS"].split(",")) == sorted(le.mac for le in leases)
    assert sim_links(bed) == []  # both VFs left the guest's netns for the container's
    assert bed.guest.records() == ["k1"]

    (rec,) = list_pod_records(bed.guest.state_dir)  # what `vfhotplug status` shows
    assert (rec.pod_uid, rec.pod_name, rec.state, rec.entry) == ("k1", "oci/k1", PodState.READY, Entry.OCI)

    bed.runc("delete", "-f", "k1")
    assert_nothing_held(bed, "k1")  # poststop unpinned the netns after the VFs came home


def test_prepare_loads_neither_vpp_nor_prometheus_without_a_vpp_table(bed):
    """Python's own import log (PYTHONPROFILEIMPORTTIME, on the hook's stderr) is the oracle."""
    assert "[vpp]" not in bed.guest.config.read_text()
    bundle = bed.bundle("i1", "1")
    res = bed.hook_cmd(
        "prepare",
        "--id",
        "i1",
        "--hook-path",
        str(bed.hook),
        str(bundle),
        env={"PYTHONPROFILEIMPORTTIME": "1"},
    )
    imported = set(re.findall(r"^import time:\s+\d+ \|\s+\d+ \|\s+(\S+)", res.stderr, re.M))
    assert {"grpc", "vm_side.lifecycle", "oci_hooks.hooks"} <= imported  # the oracle sees the hook
    assert bed.host.leases_of("i1")  # and the hook did its work
    heavy = ("prometheus_client", "vpp_papi", "vm_side.vpp", "vm_side.vpp_pod", "vm_side.dpdk_health")
    assert not {m for m in imported if m.startswith(heavy)}
    bed.hook_cmd("release", "i1")
    assert_nothing_held(bed, "i1")


def test_dpdk_mode_gets_vfio_devices_env_and_mounts(bed):
    bundle = bed.bundle("d1", '[{"mode": "dpdk"}]')
    prepare(bed, "d1", bundle, sim=True)
    config = json.loads((bundle / "config.json").read_text())
    (lease,) = bed.host.leases_of("d1")
    group = Path(os.readlink(bed.guest.sysfs / "bus/pci/devices" / lease.guest_pci / "iommu_group")).name
    assert {d["path"] for d in config["linux"]["devices"]} == {"/dev/vfio/vfio", f"/dev/vfio/{group}"}
    allowed = {
        (r.get("major"), r.get("minor")) for r in config["linux"]["resources"]["devices"] if r["allow"]
    }
    assert {(d["major"], d["minor"]) for d in config["linux"]["devices"]} <= allowed
    assert {"/dev/hugepages", "/var/run/dpdk"} <= {m["destination"] for m in config["mounts"]}
    bed.runc("run", "-d", "--bundle", str(bundle), "d1")

    assert bed.in_container("d1", "ls", "/dev/vfio").split() == sorted(["vfio", group])
    env = pid1_env(bed, "d1")
    assert env["VFHOTPLUG_MODES"] == "dpdk" and env["VFHOTPLUG_PCI_ADDRESSES"] == lease.guest_pci
    assert "/var/run/dpdk" in bed.in_container("d1", "cat", "/proc/mounts")
    assert driver(bed, lease.guest_pci) == "vfio-pci"

    bed.runc("delete", "-f", "d1")
    assert bed.host.leases_of("d1") == []
    assert not (bed.guest.sysfs / "bus/pci/devices" / lease.guest_pci).exists()  # unplugged by the host
    assert bed.guest.records() == [] and bed.guest.journal() == []


def driver(bed: oci_bed.Bed, pci: str) -> str:
    return Path(os.readlink(bed.guest.sysfs / "bus/pci/devices" / pci / "driver")).name


def test_host_down_at_poststop_is_journaled_then_completed(bed):
    bundle = bed.bundle("j1", '[{"mode": "dpdk"}]')
    prepare(bed, "j1", bundle, sim=True)
    bed.runc("run", "-d", "--bundle", str(bundle), "j1")
    (lease,) = bed.host.leases_of("j1")
    assert driver(bed, lease.guest_pci) == "vfio-pci"

    bed.host.stop()
    res = bed.runc("delete", "-f", "j1")
    assert res.returncode == 0
    # Undone in the guest (the kernel driver is back), but the host still owes the release.
    assert driver(bed, lease.guest_pci) == "iavf"
    assert bed.guest.records() == [] and bed.guest.journal() == ["j1"]

    bed.host.start()
    assert [le.lease_id for le in bed.host.leases_of("j1")] == [lease.lease_id]  # still held
    bed.hook_cmd("release-owed")
    assert bed.host.leases_of("j1") == [] and bed.guest.journal() == []


def test_bad_annotation_refused_with_one_line_and_no_lease(bed):
    bundle = bed.bundle("b1", '[{"vlan": 5000}]')
    before = (bundle / "config.json").read_text()
    res = bed.hook_cmd("prepare", "--id", "b1", "--hook-path", str(bed.hook), str(bundle), check=False)
    assert res.returncode == 1
    (line,) = res.stderr.splitlines()
    assert "vfhotplug.io/vfs request 0 field 'vlan'" in line and "b1" in line
    assert (bundle / "config.json").read_text() == before
    assert not (bed.guest.state_dir / "netns" / "b1").exists()  # the netns made for it is gone too

    # runc with the documented hooks but without prepare: createRuntime refuses, naming the field.
    bed.add_hooks(bundle)
    res = bed.runc("run", "-d", "--bundle", str(bundle), "b1", check=False)
    assert res.returncode != 0
    assert "vfhotplug: container b1: bad demand: vfhotplug.io/vfs request 0 field 'vlan'" in res.stderr
    assert bed.runc("list", "-q").stdout.split() == []
    assert bed.host.leases() == [] and bed.guest.records() == []


def test_unprepared_container_is_refused(bed):
    bundle = bed.bundle("u1", "1")
    bed.add_hooks(bundle)
    res = bed.runc("run", "-d", "--bundle", str(bundle), "u1", check=False)
    assert res.returncode != 0
    assert "vfhotplug: container u1 asks for VFs (vfhotplug.io/vfs) but none were prepared" in res.stderr
    assert bed.host.leases() == []


def test_hook_killed_mid_prepare_then_poststop_leaks_nothing(bed):
    bundle = bed.bundle("x1", "2")
    cmd = ["nsenter", f"--net={bed.guest.netns_path}", str(bed.hook), *bed.hook_args()]
    proc = subprocess.Popen([*cmd, "prepare", "--id", "x1", "--hook-path", str(bed.hook), str(bundle)])
    end = time.monotonic() + 20
    while not bed.host.leases_of("x1") and time.monotonic() < end and proc.poll() is None:
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL  # killed, not finished: the host had just granted the VFs
    assert bed.guest.records() == ["x1"]  # the killed hook left its record behind
    assert "vfhotplug.io/prepared-for" not in (bundle / "config.json").read_text()

    bed.hook_cmd("poststop", stdin=stopped_state("x1", bundle, {"vfhotplug.io/vfs": "2"}))
    # A release that raced the host's own attach is journaled; the next retry settles it.
    end = time.monotonic() + 20
    while bed.guest.journal() and time.monotonic() < end:
        time.sleep(0.2)
        bed.hook_cmd("release-owed", check=False)
    assert_nothing_held(bed, "x1")


def test_poststop_twice_releases_once(bed):
    keep = bed.bundle("keep", "1")
    prepare(bed, "keep", keep)
    bed.runc("run", "-d", "--bundle", str(keep), "keep")
    bundle = bed.bundle("p1", "1")
    prepare(bed, "p1", bundle)
    bed.runc("run", "-d", "--bundle", str(bundle), "p1")
    bed.runc("delete", "-f", "p1")  # poststop #1, run by runc

    annotations = json.loads((bundle / "config.json").read_text())["annotations"]
    res = bed.hook_cmd("poststop", stdin=stopped_state("p1", bundle, annotations))
    assert res.returncode == 0 and res.stderr == ""
    assert bed.host.leases_of("p1") == []
    (kept,) = bed.host.leases_of("keep")  # the other container's VF is untouched, still in it
    assert kept.state == "attached" and container_links(bed, "keep")["net1"] == kept.mac
    assert bed.guest.records() == ["keep"] and bed.guest.journal() == []


def test_container_without_annotation_is_untouched(bed):
    bundle = bed.bundle("n1", None, args=("sleep", "600"))
    before = (bundle / "config.json").read_text()
    bed.hook_cmd("prepare", "--hook-path", str(bed.hook), str(bundle))
    assert (bundle / "config.json").read_text() == before  # no hooks, no env: runc runs it as it was
    bed.add_hooks(bundle)
    bed.runc("run", "-d", "--bundle", str(bundle), "n1")
    assert set(container_links(bed, "n1")) == {"lo"}
    bed.runc("delete", "-f", "n1")
    assert bed.host.leases() == [] and bed.guest.records() == []
