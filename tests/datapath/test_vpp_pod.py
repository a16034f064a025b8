"""The real vpp_papi client, through ``Vpp`` and ``VppPods``, against the VPP API stand-in (modelled VPP
behaviour: see tests/vpp_standin)."""

from __future__ import annotations

import multiprocessing
import os
import signal
import socket
import stat
import time
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from vpp_papi.vpp_papi import VPPApiJSONFiles

from contract.pci import PciAddress
from tests.datapath.conftest import make_vpp
from tests.vpp_standin.model import ADMIN_UP, VppModel
from tests.vpp_standin.server import API_DIR
from vm_side.vpp import (
    AVF_MESSAGES,
    COMMON_MESSAGES,
    DEV_MESSAGES,
    DriverPath,
    Vpp,
    VppIncompatible,
    VppUnavailable,
    avf_pci_u32,
    choose_driver_path,
)
from vm_side.vpp_pod import Tag, VppPodError, VppPodRecord, VppPods, memif_wiring, parse_tag

VF1, VF2 = PciAddress.parse("0000:3b:02.1"), PciAddress.parse("0000:3b:02.2")
UID = "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0"
OTHER = "11111111-2222-3333-4444-555555555555"


def assert_pod_programmed(model: VppModel, rec: VppPodRecord, kind: str) -> None:
    vfs = [i for i in model.interfaces.values() if i.kind == kind]
    memifs = [i for i in model.interfaces.values() if i.kind == "memif"]
    assert sorted(i.pci for i in vfs) == [str(VF1), str(VF2)]
    assert len(memifs) == 2
    for n, port in enumerate(rec.ports):
        vf, mif = model.interfaces[port.vf_sw_if_index], model.interfaces[port.memif_sw_if_index]
        assert vf.pci == port.pci
        assert mif.memif == (rec.socket_id, n)
        assert model.xconnects[vf.sw_if_index] == mif.sw_if_index
        assert model.xconnects[mif.sw_if_index] == vf.sw_if_index
        assert vf.flags & ADMIN_UP and mif.flags & ADMIN_UP
        assert parse_tag(vf.tag) == Tag(UID, "vf", n, port.dev_index)
        assert parse_tag(mif.tag) == Tag(UID, "memif", n)
    assert model.memif_sockets[rec.socket_id] == rec.socket_path
    assert stat.S_ISSOCK(os.stat(rec.socket_path).st_mode)


def assert_vpp_empty(model: VppModel) -> None:
    assert [i.kind for i in model.interfaces.values()] == ["local"]
    assert model.devices == {}
    assert list(model.memif_sockets) == [0]
    assert model.xconnects == {}


@pytest.mark.parametrize(("offer", "kind"), [(("dev", "avf"), "dev"), (("avf",), "avf")])
def test_pod_with_two_vfs_is_programmed_and_undone(make_standin, pods: VppPods, offer, kind) -> None:
    standin = make_standin(offer)
    rec = pods.program(UID, [VF1, VF2])
    assert pods.vpp.driver_path is DriverPath(kind)
    assert_pod_programmed(standin.model, rec, kind)
    if kind == "avf":
        assert sorted(i.name for i in standin.model.interfaces.values() if i.kind == "avf") == [
            "avf-0/3b/2/1",
            "avf-0/3b/2/2",
        ]
    assert VppPodRecord.from_dict(rec.to_dict()) == rec

    pods.undo(rec)
    assert_vpp_empty(standin.model)
    assert not Path(rec.socket_path).parent.exists()
    pods.undo(rec)  # idempotent


def test_vpp_without_either_driver_message_set_is_refused(make_standin, pods: VppPods) -> None:
    standin = make_standin(())
    with pytest.raises(VppPodError, match=r"dev_attach_44b725fc.*avf_create_daab8ae2") as e:
        pods.program(UID, [VF1])
    assert isinstance(e.value.__cause__, VppIncompatible)
    assert_vpp_empty(standin.model)
    assert not (pods.memif_dir / UID).exists()


def test_vpp_down_at_pod_start(pods: VppPods) -> None:
    with pytest.raises(VppPodError, match="does not answer"):
        pods.program(UID, [VF1])
    assert not (pods.memif_dir / UID).exists()


@pytest.mark.parametrize(
    ("offer", "call"),
    [(("dev",), "dev_attach"), (("dev",), "dev_create_port_if"), (("avf",), "avf_create")],
)
def test_error_on_second_vf_undoes_everything(make_standin, pods: VppPods, offer, call) -> None:
    standin = make_standin(offer)
    standin.fail_on(call, 2, -79)
    with pytest.raises(VppPodError, match=rf"VF {VF2}: VPP {call}.*-79 \(IF_ALREADY_EXISTS\).*undone"):
        pods.program(UID, [VF1, VF2])
    assert_vpp_empty(standin.model)
    assert not (pods.memif_dir / UID).exists()


def _program_in_child(sock: Path, memif_dir: Path) -> None:
    VppPods(make_vpp(sock), memif_dir).program(OTHER, [VF2])


def test_plugin_killed_after_attach_before_memif(make_standin, pods: VppPods, short_tmp: Path) -> None:
    standin = make_standin()
    live = pods.program(UID, [VF1])
    standin.stall_on("memif_create_v2", 1)
    child = multiprocessing.get_context("fork").Process(
        target=_program_in_child, args=(short_tmp / "api.sock", pods.memif_dir)
    )
    child.start()
    deadline = time.monotonic() + 10
    while standin.calls.get("memif_create_v2", 0) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    os.kill(child.pid or 0, signal.SIGKILL)
    child.join()
    assert any(parse_tag(i.tag) == Tag(OTHER, "vf", 0, 1) for i in standin.model.interfaces.values())

    after = pods.reconcile([live])
    assert after == (live,)
    tagged = {t.pod_uid for i in standin.model.interfaces.values() if (t := parse_tag(i.tag))}
    assert tagged == {UID}
    assert list(standin.model.devices.values()) == [f"pci/{VF1}"]
    assert sorted(standin.model.memif_sockets.values())[1:] == [live.socket_path]
    assert sorted(p.name for p in pods.memif_dir.iterdir()) == [UID]


def test_vpp_restart_reconcile_recreates_pods(make_standin, pods: VppPods) -> None:
    standin = make_standin()
    rec = pods.program(UID, [VF1, VF2])
    standin.restart()
    assert_vpp_empty(standin.model)
    assert Path(rec.socket_path).exists()  # VPP died: its memif socket file stays behind

    (again,) = pods.reconcile([rec])
    assert [p.pci for p in again.ports] == [str(VF1), str(VF2)]
    assert_pod_programmed(standin.model, again, "dev")
    assert pods.reconcile([again]) == (again,)  # nothing to do the second time
    with socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET) as s:
        s.connect(again.socket_path)  # VPP listens again on the same path the pod has mounted


def test_memif_wiring_names_socket_and_ids(short_tmp: Path) -> None:
    w = memif_wiring(short_tmp / "memif", UID, 2)
    (mount,) = w.mounts
    assert mount.source == str(short_tmp / "memif" / UID)
    env = dict(w.env)
    assert env["VFHOTPLUG_MEMIF_SOCKET"] == f"{mount.destination}/memif.sock"
    assert env["VFHOTPLUG_MEMIF_IDS"] == "0,1"
    with pytest.raises(ValueError, match="pod uid"):
        memif_wiring(short_tmp, "../etc", 1)


def test_avf_create_packs_pci_address_as_vpp_reads_it() -> None:
    assert avf_pci_u32(PciAddress.parse("0000:3b:02.1")) == 0x223B0000
    msgs, _ = VPPApiJSONFiles.process_json_str((API_DIR / "avf.api.json").read_text())
    wire = msgs["avf_create"].pack(
        {"_vl_msg_id": 0x1D, "pci_addr": 0x223B0000, "rxq_num": 1, "rxq_size": 1024, "txq_size": 1024}
    )
    # Golden sample (vpp-dpdk notes §5): id, client_index, context, pci_addr, enable_elog, queues.
    assert bytes(wire).hex() == "001d0000000000000000223b000000000000000104000400"


def test_tags_round_trip_and_ignore_foreign_tags() -> None:
    t = Tag(UID, "vf", 3, 42)
    assert parse_tag(str(t)) == t and len(str(t)) <= 63
    assert parse_tag("uplink") is None and parse_tag("vfh:x:bridge1") is None


def test_api_definitions_bootstrapped_from_vpp(make_standin, short_tmp: Path) -> None:
    standin = make_standin(("avf",))
    vpp = Vpp(short_tmp / "api.sock", api_dirs=None)  # get_api_json (VPP >= 24.06)
    rec = VppPods(vpp, short_tmp / "memif").program(UID, [VF1])
    assert vpp.driver_path is DriverPath.AVF and standin.calls["get_api_json"] == 1
    assert [i.name for i in standin.model.interfaces.values() if i.kind == "avf"] == ["avf-0/3b/2/1"]
    VppPods(vpp, short_tmp / "memif").undo(rec)
    vpp.close()


def test_driver_path_choice_names_missing_messages() -> None:
    everything = frozenset(COMMON_MESSAGES + DEV_MESSAGES + AVF_MESSAGES)
    assert choose_driver_path(everything) is DriverPath.DEV
    assert choose_driver_path(everything - set(DEV_MESSAGES[:1])) is DriverPath.AVF
    # A CRC drift looks like a missing message: the name_crc key is not in VPP's table.
    with pytest.raises(VppIncompatible, match="memif_create_v2_8c7de5f7"):
        choose_driver_path(everything - {"memif_create_v2_8c7de5f7"})


def test_undo_while_vpp_is_down_can_be_retried(make_standin, pods: VppPods) -> None:
    standin = make_standin()
    rec = pods.program(UID, [VF1])
    standin.stop()
    with pytest.raises(VppUnavailable):
        pods.undo(rec)
    standin.model = VppModel()  # VPP came back empty
    standin.start()
    pods.vpp.reconnect()
    pods.undo(rec)
    assert not Path(rec.socket_path).parent.exists()


@given(
    st.from_regex(r"[A-Za-z0-9-]{1,40}", fullmatch=True), st.sampled_from(["vf", "memif"]), st.integers(0, 99)
)
def test_tag_round_trip(uid: str, kind: str, n: int) -> None:
    t = Tag(uid, kind, n, 4_000_000_000 if kind == "vf" else None)
    assert parse_tag(str(t)) == t and len(str(t)) <= 63
