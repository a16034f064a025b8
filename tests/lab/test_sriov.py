"""The lab's SR-IOV level: the host side on real SR-IOV VFs (issue 7).

One nested run (lab.sriov.run) boots an outer QEMU 10 guest with an emulated igb PF that plays the
physical host; inside it lab.sriov.check drives the project's adapters against real igbvf VFs, this
machine's libvirtd 9.0 and an inner guest, and records what it saw. These tests assert on that record,
comparing what our code set with what independent oracles report: `ip -j -d link show` on the PF, the VF's
sysfs driver, libvirt's live XML and the inner guest's own PCI-ADD/PCI-DEL lines.
"""

from __future__ import annotations

from typing import Any

import pytest

from lab.sriov.run import BUILD, LabError, run_nested
from tests.lab.level_setup import set_up_level

pytestmark = pytest.mark.lab

VF_IDS = "8086:10ca"


@pytest.fixture(scope="module")
def run() -> dict[str, Any]:
    set_up_level("lab/sriov/setup.sh", "bind mounts, chroot, QEMU")
    try:
        outcome = run_nested(BUILD / "run")
    except LabError as e:
        pytest.fail(f"SR-IOV lab run: {e}")
    if outcome.result is None:
        log = outcome.out / "l1.log"
        tail = (
            "\n".join(log.read_text(errors="replace").splitlines()[-30:]) if log.exists() else "(no l1.log)"
        )
        pytest.fail(f"the check in L1 wrote no result.json; l1.log tail:\n{tail}")
    return outcome.result


def obs(run: dict[str, Any], key: str) -> Any:
    observations = run["observations"]
    if key not in observations:
        step_errors = {k: v["error"] for k, v in run["steps"].items() if not v["ok"]}
        pytest.fail(f"the check recorded no {key!r}; failed steps: {step_errors or 'none'}")
    return observations[key]


def l2_fields(view: dict[str, Any]) -> tuple[str, int]:
    return view["mac"], view["vlan"]


def test_every_step_of_the_check_ran_without_error(run: dict[str, Any]) -> None:
    failed = {name: step["error"] for name, step in run["steps"].items() if not step["ok"]}
    assert not failed, "\n".join(f"{name}:\n{err}" for name, err in failed.items())
    assert set(run["steps"]) == {
        "discover", "netlink", "start_service", "boot_l2", "interface_hostdev", "hostdev", "interface_hostdev_release", "service", "error_codes", "finish"
    }  # fmt: skip


def test_inventory_finds_the_igbvf_vfs_that_sriov_numvfs_created(run: dict[str, Any]) -> None:
    pf = obs(run, "pf")
    assert (pf["ids"], pf["missing"]) == ("8086:10c9", [])
    vfs = obs(run, "vfs")
    assert [v["index"] for v in vfs] == [0, 1]
    assert {(v["ids"], v["driver"], v["pf_pci"]) for v in vfs} == {(VF_IDS, "igbvf", pf["pci"])}
    assert all(v["netdev"] for v in vfs)
    # The emulated VT-d puts each VF in an IOMMU group of its own: each can be passed through alone.
    groups = [v["iommu_group"] for v in vfs]
    assert None not in groups and len(set(groups)) == 2
    assert {v["iommu_group_size"] for v in vfs} == {1}


def test_netlink_sets_mac_vlan_spoofchk_trust_as_ip_link_reports_them(run: dict[str, Any]) -> None:
    wanted, applied = obs(run, "netlink.wanted"), obs(run, "netlink.applied")
    for view in (applied["netlink"], applied["ip"]):
        assert (view["mac"], view["vlan"], view["spoofchk"], view["trust"]) == (
            wanted["mac"], wanted["vlan"], wanted["spoofchk"], wanted["trust"]
        )  # fmt: skip
    original = obs(run, "netlink.original")["ip"]
    assert (original["mac"], original["vlan"]) != (wanted["mac"], wanted["vlan"])


def test_netlink_sets_a_vf_rate_limit(run: dict[str, Any]) -> None:
    assert obs(run, "netlink.rate")["raised"] is None
    view = obs(run, "netlink.rate_view")
    assert view["ip"]["max_tx_rate"] == view["netlink"]["max_tx_rate_mbps"] == 100


def test_netlink_restores_the_original_vf_settings(run: dict[str, Any]) -> None:
    assert obs(run, "netlink.restore")["raised"] is None
    assert obs(run, "netlink.restored")["ip"] == obs(run, "netlink.original")["ip"]


def test_interface_hostdev_attach_programs_the_pf_and_the_guest_sees_the_vf(run: dict[str, Any]) -> None:
    settings, plugged = obs(run, "ifhd.settings"), obs(run, "ifhd.plugged")
    assert plugged["alias"].startswith("ua-vfhp-") and plugged["mac"] == settings["mac"]
    assert plugged["alias"] in obs(run, "ifhd.attached_aliases")
    attached = obs(run, "ifhd.attached")
    assert l2_fields(attached["ip"]) == l2_fields(attached["netlink"]) == (settings["mac"], settings["vlan"])
    assert obs(run, "ifhd.attached_driver") == "vfio-pci"
    guest = obs(run, "ifhd.guest_add")
    assert (guest["vendor_device"], guest["driver"], guest["mac"]) == (VF_IDS, "igbvf", settings["mac"])


def test_attaching_a_vf_in_use_is_refused_with_code_55_and_leaves_nothing(run: dict[str, Any]) -> None:
    refused = obs(run, "in_use")
    assert (refused["raised"], refused["libvirt_code"]) == ("PreconditionFailed", 55)
    assert "in use" in refused["message"]
    assert obs(run, "in_use.aliases") == obs(run, "ifhd.attached_aliases")


def test_interface_hostdev_release_is_event_confirmed_and_settings_come_back(run: dict[str, Any]) -> None:
    alias = obs(run, "ifhd.plugged")["alias"]
    assert alias not in obs(run, "ifhd.detached_aliases")
    assert obs(run, "ifhd.detached_driver") == "igbvf"
    assert run["timings"]["ifhd.guest_del_after_detach"] >= 0
    assert obs(run, "ifhd.left_by_libvirt")["ip"]["vlan"] == 0  # libvirt clears the VLAN itself
    assert obs(run, "ifhd.restored")["ip"] == obs(run, "ifhd.before")["ip"]
    assert obs(run, "ifhd.detach_again")["raised"] is None


def test_hostdev_attach_carries_the_netlink_mac_into_the_guest(run: dict[str, Any]) -> None:
    plugged = obs(run, "hostdev.plugged")
    assert plugged["alias"].startswith("ua-vfhp-")
    attached = obs(run, "hostdev.attached")
    assert l2_fields(attached["ip"]) == ("52:54:00:d0:00:03", 200)
    assert obs(run, "hostdev.attached_driver") == "vfio-pci"
    guest = obs(run, "hostdev.guest_add")
    assert (guest["vendor_device"], guest["mac"]) == (VF_IDS, "52:54:00:d0:00:03")
    assert plugged["alias"] not in obs(run, "hostdev.detached_aliases")
    assert obs(run, "hostdev.detached_driver") == "igbvf"
    assert obs(run, "hostdev.restored")["ip"] == obs(run, "hostdev.before")["ip"]


def test_service_attach_over_grpc_programs_the_vf_and_the_guest_sees_it(run: dict[str, Any]) -> None:
    health = obs(run, "service.health")
    assert (health["backend"], health["identity"]) == ("libvirt", "labd-l2")
    assert sum(health["vfs"].values()) == 2
    granted = obs(run, "service.granted")
    assert (granted["mac"], granted["vlan"]) == ("52:54:00:d0:00:05", 300)
    attached = obs(run, "service.attached")
    assert l2_fields(attached["ip"]) == l2_fields(attached["netlink"]) == ("52:54:00:d0:00:05", 300)
    assert obs(run, "service.attached_driver") == "vfio-pci"
    assert any(a.startswith("ua-vfhp-") for a in obs(run, "service.attached_aliases"))
    guest = obs(run, "service.guest_add")
    assert (guest["vendor_device"], guest["mac"]) == (VF_IDS, "52:54:00:d0:00:05")


def test_service_refuses_a_vf_in_use_elsewhere_and_keeps_no_lease(run: dict[str, Any]) -> None:
    refused = obs(run, "service.in_use")
    assert refused["code"] == "FAILED_PRECONDITION"
    assert "in use" in refused["message"] and "55" in refused["message"]
    leases = obs(run, "service.leases_after_in_use")
    assert [le["pod_uid"] for le in leases] == ["pod-a-uid"]
    # The other holder's VF keeps its settings (the service touches them before libvirt refuses: it must
    # put them back).
    assert obs(run, "service.in_use_vf_view")["ip"] == obs(run, "service.in_use_vf_before")["ip"]


def test_release_from_a_paused_guest_is_not_done_before_it_resumes(run: dict[str, Any]) -> None:
    assert obs(run, "paused.pending_while_paused") is True
    assert any(a.startswith("ua-vfhp-") for a in obs(run, "paused.aliases_while_paused"))
    assert obs(run, "paused.driver_while_paused") == "vfio-pci"
    release = obs(run, "paused.release")
    assert release == {"released": [obs(run, "service.granted")["lease_id"]], "quarantined": []}
    assert run["timings"]["paused.done_after_resume"] >= 0
    assert not any(a.startswith("ua-vfhp-") for a in obs(run, "paused.aliases_after"))
    assert obs(run, "paused.driver_after") == "igbvf"


def test_service_release_restores_the_vf_settings_and_frees_the_lease(run: dict[str, Any]) -> None:
    pci = obs(run, "service.granted")["host_pci"]
    assert obs(run, "service.released_view")["ip"] == obs(run, "service.originals")[pci]["ip"]
    assert obs(run, "service.leases_after_release") == []


def test_real_libvirt_error_codes_on_real_devices(run: dict[str, Any]) -> None:
    missing, not_vf, never = (
        obs(run, "error.missing_device"),
        obs(run, "error.not_a_vf"),
        obs(run, "error.never_attached"),
    )
    assert (missing["raised"], missing["libvirt_code"]) == ("PreconditionFailed", 38)
    assert "0000:3b:10.0" in missing["message"]
    assert (not_vf["raised"], not_vf["libvirt_code"]) == ("PreconditionFailed", 67)
    assert "Virtual Functions only" in not_vf["message"]
    # libvirt unbinds a managed device before it finds it is no VF; it must give it back to its driver.
    assert obs(run, "error.not_a_vf_driver_before") == obs(run, "error.not_a_vf_driver_after") == "e1000e"
    assert (never["raised"], never["libvirt_code"]) == ("NotFound", 99)
    assert obs(run, "error.aliases_after") == []


def test_every_vf_ends_back_on_igbvf(run: dict[str, Any]) -> None:
    assert [v["driver"] for v in obs(run, "final.vfs")] == ["igbvf", "igbvf"]
