"""The datapath steps (VppStep against the VPP stand-in, DpdkEnvStep on real folders), the health file and
the `vfhotplug pods` view."""

from __future__ import annotations

import json
import time
from pathlib import Path

from contract.host_api import GrantedVf
from contract.pci import PciAddress
from tests.datapath.conftest import make_vpp
from vm_side.adjustment import build_adjustment
from vm_side.datapath_steps import DpdkEnvStep, telemetry_socket
from vm_side.demand import Mode, VfSlot
from vm_side.dpdk_env import DpdkEnvs
from vm_side.dpdk_health import HealthMonitor
from vm_side.health_report import HEALTH_FILE, HealthPoller, read_health
from vm_side.pod_record import PodRecord, PodState, StepDone, VfBinding
from vm_side.pods_view import render_pods
from vm_side.record_store import RecordStore
from vm_side.vpp_pod import VppPods, parse_tag
from vm_side.vpp_step import VppStep

UID = "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0"
ORPHAN = "99999999-2222-3333-4444-555555555555"


def record(uid: str, mode: Mode, n: int = 2, first_bus: int = 0x10) -> PodRecord:
    vfs = []
    for i in range(n):
        gpci = PciAddress(0, first_bus + i, 0, 0)
        grant = GrantedVf(f"L{i}", "net", PciAddress(0, 0x3B, 2, i), gpci, f"02:fe:00:00:00:0{i}", 0, None, 0)
        vfs.append(VfBinding(VfSlot(0, "net", mode, f"net{i + 1}"), grant, gpci, bound=True))
    return PodRecord(
        uid, "default/p", "", PodState.READY, 1, f"{uid}/1", tuple(v.slot for v in vfs), tuple(vfs)
    )


def with_step(rec: PodRecord, name: str, notes: dict[str, str]) -> PodRecord:
    return PodRecord(**{**vars(rec), "steps": (StepDone(name, notes),)})


def test_vpp_step_programs_reconciles_after_restart_and_undoes(make_standin, short_tmp: Path) -> None:
    standin = make_standin()
    vpp = make_vpp(short_tmp / "api.sock")
    step = VppStep(VppPods(vpp, short_tmp / "memif"))
    rec = record(UID, Mode.VPP)
    notes = step.apply(rec, time.monotonic() + 5)
    ready = with_step(rec, "vpp", notes)
    adj = build_adjustment(ready)
    assert [(m.destination, m.source) for m in adj.mounts if "memif" in m.destination] == [
        ("/run/vfhotplug/memif", str(short_tmp / "memif" / UID))
    ]
    assert dict(adj.env)["VFHOTPLUG_MEMIF_IDS"] == "0,1"
    assert step.reconcile(lambda: [ready]) == {}  # intact: nothing to re-create

    standin.restart()  # VPP lost everything; the step reconnects and re-creates from the record
    # ... after someone left objects tagged for a pod with no record (an orphan: removed)
    orphan_vpp = make_vpp(short_tmp / "api.sock")
    VppPods(orphan_vpp, short_tmp / "memif").program(ORPHAN, [PciAddress.parse("0000:3b:02.7")])
    orphan_vpp.close()
    changed = step.reconcile(lambda: [ready])
    assert list(changed) == [UID] and json.loads(changed[UID]["vpp"]) != json.loads(notes["vpp"])
    tags = sorted(str(parse_tag(i.tag)) for i in standin.model.interfaces.values() if i.tag)
    assert tags == [f"vfh:{UID}:memif0", f"vfh:{UID}:memif1", f"vfh:{UID}:vf0:d1", f"vfh:{UID}:vf1:d2"]
    assert not (short_tmp / "memif" / ORPHAN).exists()
    # an in-flight pod (programmed, record not saved yet) is not an orphan for the background check
    other = record("11111111-2222-3333-4444-555555555555", Mode.VPP, 1, first_bus=0x20)
    step.apply(other, time.monotonic() + 5)
    assert step.reconcile(lambda: [ready]) == {}
    assert len([i for i in standin.model.interfaces.values() if i.tag]) == 6

    step.undo(other, {})
    step.undo(ready, changed[UID])
    assert [i.kind for i in standin.model.interfaces.values()] == ["local"]
    assert not (short_tmp / "memif" / UID).exists()
    vpp.close()


def test_dpdk_step_health_file_and_pods_view(short_tmp: Path) -> None:
    huge = short_tmp / "huge"
    huge.mkdir()
    step = DpdkEnvStep(DpdkEnvs(short_tmp / "dpdk", huge))
    rec = record(UID, Mode.DPDK, 1)
    ready = with_step(rec, "dpdk env", step.apply(rec, time.monotonic() + 5))
    sock = telemetry_socket(ready)
    assert sock is not None and sock.parent.parent == short_tmp / "dpdk" / UID
    store = RecordStore(short_tmp / "state" / "pods")
    store.save(ready)
    poller = HealthPoller(store, HealthMonitor(), short_tmp / "state" / HEALTH_FILE)
    entries = poller.poll_once()  # no app started in the pod: no telemetry
    assert entries[UID].state == "unhealthy" and entries[UID].reasons[0].startswith("DPDK process gone")
    assert read_health(short_tmp / "state" / HEALTH_FILE) == entries
    view = render_pods(store.all(), entries, time.time())
    assert "default/p" in view and UID in view and "unhealthy" in view and "0000:10:00.0" in view

    step.undo(ready, {})
    store.remove(UID)
    assert not (short_tmp / "dpdk" / UID).exists()
    assert poller.poll_once() == {}  # the pod's health and metrics go with it
