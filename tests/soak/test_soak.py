"""The short chaos soak in `make test` (about a minute per runtime), and the checker's own tests: a
checker that cannot see a violation would pass any soak."""

from __future__ import annotations

import random
import shutil
import tempfile
from pathlib import Path

import pytest

from contract.host_api import GrantedVf
from contract.pci import PciAddress
from host_side.api.lease_state import LeaseState
from host_side.api.wire import LeaseInfo
from testbed.containerd import Containerd
from tests.soak.chaos import ALL_FAULTS
from tests.soak.driver import SoakSpec, run_soak
from tests.soak.invariants import LivePod, Snapshot, check, double_leases
from tests.soak.workload import Kind, plan_pods
from vm_side.demand import Mode, VfSlot
from vm_side.pod_record import PodRecord, PodState, VfBinding
from vm_side.release_journal import OwedRelease

SHORT_SOAK_S = 60.0
SEED = 20261208  # fixed in CI so a failure replays; `make soak` picks a new one each run


def _lease(pci: str, uid: str | None, mac: str = "02:00:00:00:00:01") -> LeaseInfo:
    state = LeaseState.ATTACHED if uid else LeaseState.WARM
    return LeaseInfo(
        f"l-{pci}-{uid}", state, "vm-1", "net", "ens1f0", 0, pci, None, uid, uid, mac, 0, None, 0.0, None
    )


def _record(uid: str, pci: str, mac: str, mode: Mode = Mode.KERNEL) -> PodRecord:
    slot = VfSlot(0, "net", mode, "net1")
    grant = GrantedVf("l", "net", PciAddress.parse(pci), None, mac, 0, None, 0)
    vf = VfBinding(slot, grant, None, bound=True)
    return PodRecord(uid, uid, f"/run/netns/{uid}", PodState.READY, 1, "r", (slot,), (vf,))


def _snap(**kw: object) -> Snapshot:
    base: dict[str, object] = dict(
        live=[],
        leases=[],
        records=[],
        owed=[],
        pod_netns_macs={},
        root_macs=frozenset(),
        dpdk_dirs=frozenset(),
        hugepage_files=[],
    )
    base.update(kw)
    return Snapshot(**base)  # type: ignore[arg-type]


MAC = "02:00:00:00:00:01"
GOOD = dict(
    live=[LivePod("a", "a", 1, False)],
    leases=[_lease("0000:3c:00.0", "a", MAC)],
    records=[_record("a", "0000:3c:00.0", MAC)],
    pod_netns_macs={"a": frozenset({MAC})},
)


def test_a_consistent_system_has_no_violation() -> None:
    assert check(_snap(**GOOD)) == []


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (
            {"leases": [_lease("0000:3c:00.0", "a", MAC), _lease("0000:3c:00.0", "b", MAC)]},
            "leased to ['a', 'b']",
        ),
        ({"records": []}, "without a ready record"),
        ({"pod_netns_macs": {}}, "not in its netns"),
        ({"live": []}, "dead pod a still holds"),
        ({"owed": [OwedRelease("a", "a", "r", 0.0)]}, "journal not empty"),
        ({"root_macs": frozenset({"02:00:00:00:00:09"})}, "left in the VM's root netns"),
        ({"dpdk_dirs": frozenset({"gone"})}, "DPDK runtime folder"),
        ({"hugepage_files": ["vfh0000000000000000map_0"]}, "hugepage file"),
        ({"live": [LivePod("a", "a", 2, False)]}, "asked 2 VFs, host leases 1"),
        ({"live": [LivePod("a", "a", 1, True)]}, "refused demand but holds"),
        ({"cdi_specs": ["gone"]}, "left its CDI spec"),
    ],
)
def test_each_violation_is_seen(change: dict[str, object], expected: str) -> None:
    found = check(_snap(**{**GOOD, **change}))
    assert any(expected in v for v in found), found


def test_double_lease_is_seen_and_warm_spares_are_not_pods() -> None:
    assert double_leases([_lease("p", None), _lease("p", None)]) == []
    assert double_leases([_lease("p", "x"), _lease("p", "y")]) == ["VF p leased to ['x', 'y'] at once"]


def test_the_workload_replays_from_its_seed_and_mixes_every_kind() -> None:
    one = plan_pods(random.Random(7), 200, ("net", "fast"), 7)
    assert one == plan_pods(random.Random(7), 200, ("net", "fast"), 7)
    assert {p.kind for p in one} == set(Kind)
    assert any(p.dpdk for p in one) and any(p.kind is Kind.GOOD and not p.dpdk for p in one)
    assert any(p.kind is Kind.REFUSED and p.vfs == 8 for p in one)  # over the quota of 7


@pytest.mark.containerd
def test_short_soak_keeps_every_invariant(containerd: Containerd) -> None:
    work = Path(tempfile.mkdtemp(prefix="vfh-soak-"))
    report = run_soak(containerd, work, SoakSpec(seed=SEED, duration_s=SHORT_SOAK_S))
    print(report.render())
    if not report.violations:
        shutil.rmtree(work, ignore_errors=True)  # kept otherwise: host.log and nri.log tell what happened
    assert report.started > 10, report.render()
    assert set(report.faults) == {str(f) for f in ALL_FAULTS}, (
        f"not every fault was injected:\n{report.render()}"
    )
    assert report.violations == [], f"{report.render()}\nlogs in {work}"
