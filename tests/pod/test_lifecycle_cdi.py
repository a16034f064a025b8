"""The lifecycle's CDI specs: written for dpdk pods once their VFs are bound, gone when the pod ends or
fails, stale ones removed by reconcile; the adjustment names the devices only for NRI v0.8+ runtimes."""

import json
from pathlib import Path

import pytest

from tests.pod.conftest import Guest, needs_root
from tests.pod.lifecycle_checks import assert_clean, soon
from vm_side.cdi_store import CdiStore
from vm_side.demand import ANNOTATION
from vm_side.lifecycle import PodError
from vm_side.pod_record import PodRecord, PodState
from vm_side.runtime_model import RuntimeInfo, runtime_info

pytestmark = needs_root
DPDK_2 = '[{"count": 2, "mode": "dpdk"}]'
V08 = runtime_info("containerd", "2.1.9")


def test_dpdk_pod_gets_a_spec_and_cdi_devices_only_on_v08(guest: Guest, tmp_path: Path) -> None:
    cdi = CdiStore(tmp_path / "cdi")
    life = guest.lifecycle(cdi=cdi)
    rec = life.prepare("u1", "pod-1", "", {ANNOTATION: DPDK_2}, soon())
    assert rec is not None
    doc = json.loads(cdi.path("u1").read_text())
    assert [d["name"] for d in doc["devices"]] == ["u1-net1", "u1-net2"]
    groups = {vf.iommu_group for vf in rec.vfs}
    nodes = {n["path"] for d in doc["devices"] for n in d["containerEdits"]["deviceNodes"]}
    assert nodes == {f"/dev/vfio/{g}" for g in groups}
    assert [n["path"] for n in doc["containerEdits"]["deviceNodes"]] == ["/dev/vfio/vfio"]

    on_v08 = life.adjustment("u1", V08)
    assert on_v08 is not None
    assert on_v08.cdi_devices == ("vfhotplug.io/vf=u1-net1", "vfhotplug.io/vf=u1-net2")
    assert not on_v08.devices and not on_v08.env
    inline = life.adjustment("u1", RuntimeInfo())  # containerd 1.7.24, NRI v0.6.1
    assert inline is not None and not inline.cdi_devices and len(inline.devices) == 3
    assert life.adjustment("u1") == inline  # the OCI hooks

    life.release("u1")
    assert cdi.pod_uids() == []
    assert_clean(guest)


def test_kernel_pod_gets_no_spec(guest: Guest, tmp_path: Path, make_netns) -> None:
    cdi = CdiStore(tmp_path / "cdi")
    life = guest.lifecycle(cdi=cdi)
    assert life.prepare("k1", "pod-k", make_netns(), {ANNOTATION: "1"}, soon()) is not None
    assert cdi.pod_uids() == []
    adj = life.adjustment("k1", V08)
    assert adj is not None and not adj.cdi_devices and adj.env
    life.release("k1")


def test_a_failure_after_the_spec_was_written_removes_it(guest: Guest, tmp_path: Path) -> None:
    cdi = CdiStore(tmp_path / "cdi")
    life = guest.lifecycle(cdi=cdi)
    save = life.store.save

    def full_disk_once_the_spec_is_there(rec: PodRecord) -> None:
        if rec.state is PodState.PREPARING and cdi.pod_uids():
            raise OSError(28, "No space left on device")
        save(rec)

    life.store.save = full_disk_once_the_spec_is_there  # type: ignore[method-assign]
    with pytest.raises(PodError, match="No space left"):
        life.prepare("u2", "pod-2", "", {ANNOTATION: DPDK_2}, soon())
    life.store.save = save  # type: ignore[method-assign]
    assert cdi.pod_uids() == []
    assert_clean(guest)


def test_a_spec_breaking_a_cdi_rule_fails_the_pod_and_rolls_back(guest: Guest, tmp_path: Path) -> None:
    cdi = CdiStore(tmp_path / "cdi")
    life = guest.lifecycle(cdi=cdi)
    with pytest.raises(PodError, match="cdi spec: device name 'u3-dp-'"):
        life.prepare("u3", "pod-3", "", {ANNOTATION: '[{"mode": "dpdk", "ifname": "dp-"}]'}, soon())
    assert cdi.pod_uids() == [] and not list((tmp_path / "cdi").glob(".*"))
    assert_clean(guest)


def test_reconcile_removes_specs_of_pods_without_records(guest: Guest, tmp_path: Path) -> None:
    cdi = CdiStore(tmp_path / "cdi")
    life = guest.lifecycle(cdi=cdi)
    assert life.prepare("live", "pod-l", "", {ANNOTATION: DPDK_2}, soon()) is not None
    (tmp_path / "cdi" / "vfhotplug.io-vf-gone.json").write_text(cdi.path("live").read_text())
    other = tmp_path / "cdi" / "nvidia.com-gpu.json"
    other.write_text("{}")

    report = guest.lifecycle(cdi=cdi).reconcile({"live": ""})
    assert report.kept == ("live",)
    assert cdi.pod_uids() == ["live"] and other.exists()
    life.release("live")
    assert cdi.pod_uids() == []
    assert_clean(guest)
