"""The lab's pure parts, checked against the real consumers: libvirt's schema and hot-plug XML reader for
the domain, the service's and the plugin's own config parsers for the configs the lab writes."""

from __future__ import annotations

import shutil
import struct
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from host_side import config as host_config_mod
from host_side.backends.libvirt_xml import free_root_port, root_ports
from lab.host_service import GuestCredentials
from lab.service_config import service_toml
from lab.sriov.service_checks import l1_service_config
from lab.vm_side import wire
from lab.vm_side.dpdk_app import frames_from, sent_by_testpmd
from lab.vm_side.emulated_host import service_config
from lab.vm_side.plugin import plugin_config
from lab.vm_side.pods import demand, parse_look
from lab.vm_side.report import delta_ms, start_phases
from lab.vm_side.vm import QEMU_NS, SERVICE_IP, LabVmSpec, lab_domain_xml
from vm_side.config import parse as parse_plugin_config
from vm_side.demand import DemandDefaults, parse_demand


def spec(tmp_path: Path) -> LabVmSpec:
    return LabVmSpec(
        name="vfhp-lab-test",
        console_log=tmp_path / "console.log",
        agent_socket=tmp_path / "agent.sock",
        root_export=tmp_path / "rootfs",
        service_target="TCP:127.0.0.1:40000",
        kernel=tmp_path / "vmlinux",
        initrd=tmp_path / "initrd",
    )


def test_domain_keeps_every_root_port_free_for_hotplug(tmp_path: Path) -> None:
    xml = lab_domain_xml(spec(tmp_path))
    assert [p.occupied for p in root_ports(xml)] == [False] * 4
    assert free_root_port(xml) == 1
    dom = ET.fromstring(xml)
    devices = dom.find("devices")
    assert devices is not None
    buses = {a.get("bus") for a in devices.iter("address") if a.get("type") == "pci"}
    assert buses == {"0x00"}, "fixed devices sit on pcie.0"
    iommu = devices.find("iommu")
    assert iommu is not None and iommu.get("model") == "intel"
    cmdline = dom.findtext("os/cmdline") or ""
    assert "intel_iommu=on" in cmdline
    args = [a.get("value") or "" for a in dom.iter(f"{{{QEMU_NS}}}arg")]
    assert any(f"guestfwd=tcp:{SERVICE_IP}:" in a and a.endswith("TCP:127.0.0.1:40000") for a in args)
    assert any("bus=pcie.0" in a for a in args)


def test_domain_passes_libvirts_schema(tmp_path: Path) -> None:
    if shutil.which("virt-xml-validate") is None or shutil.which("xmllint") is None:
        pytest.skip("virt-xml-validate/xmllint are not installed; `make testbed-lab` installs them")
    path = tmp_path / "domain.xml"
    path.write_text(lab_domain_xml(spec(tmp_path)))
    done = subprocess.run(
        ["virt-xml-validate", str(path), "domain"], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr


def test_configs_are_accepted_by_the_real_parsers(tmp_path: Path) -> None:
    text = service_toml(
        service_config(
            domain="vfhp-lab-c", uri="qemu+unix:///system?socket=/x", port=4000, metrics_port=4001, vfs=8
        )
    )
    cfg = host_config_mod.parse(text, tmp_path / "host.toml")
    assert cfg.backend == "emulated-nic"
    assert [vm.domain for vm in cfg.vms.values()] == ["vfhp-lab-c"]
    creds = GuestCredentials(tmp_path / "ca.pem", tmp_path / "lab-vm.pem", tmp_path / "lab-vm.key")
    plugin = parse_plugin_config(
        plugin_config(nri_socket="/run/nri.sock", creds=creds), tmp_path / "nri.toml"
    )
    assert plugin.host.target.startswith(SERVICE_IP)
    assert plugin.lifecycle.defaults.pool in cfg.pools
    assert cfg.listen.ca == tmp_path / "pki/ca.pem", "PKI paths are the config folder's"
    assert cfg.pools["lab"].vf_indexes == frozenset(range(8))


def test_sriov_service_config_is_accepted_by_the_real_parser(tmp_path: Path) -> None:
    text = service_toml(l1_service_config(pf="enp1s0", port=4000))
    cfg = host_config_mod.parse(text, tmp_path / "host.toml")
    assert (cfg.backend, cfg.hotplug_mode, cfg.metrics_address) == ("libvirt", "interface-hostdev", None)
    assert cfg.pools["igb"].pfs == ("enp1s0",) and cfg.pools["igb"].vf_indexes is None
    assert cfg.timeouts.reconcile_interval_s == 3600, "no periodic reconcile under the hand-plugged VFs"
    assert [(vm.identity, vm.domain, vm.quota) for vm in cfg.vms.values()] == [("labd-l2", "labd-l2", 2)]


def test_demand_annotation_parses_as_the_plugin_reads_it() -> None:
    parsed = parse_demand({"vfhotplug.io/vfs": demand(2, "dpdk")}, DemandDefaults(pool="lab"))
    assert parsed is not None
    assert [s.mode.value for s in parsed.slots] == ["dpdk", "dpdk"]


def test_wire_round_trip_and_line_limit() -> None:
    req = wire.Request(7, "pci", {"x": [1, "a"]})
    buf = wire.LineBuffer()
    (line,) = buf.feed(wire.encode(req)[:5]) + buf.feed(wire.encode(req)[5:])
    assert wire.decode_request(line) == req
    reply = wire.Reply(7, False, error="boom")
    assert wire.decode_reply(wire.encode(reply).strip()) == reply
    with pytest.raises(ValueError, match="integer id"):
        wire.decode_reply(b'{"ok": true}')
    with pytest.raises(ValueError, match="longer than"):
        buf.feed(b"x" * (wire.MAX_LINE + 1))


def test_parse_look_splits_interfaces_and_vfio_nodes() -> None:
    interfaces, vfio = parse_look("lo 00:00:00:00:00:00\nnet1 02:00:00:00:00:01\nvfio 11\nvfio vfio\n")
    assert interfaces == {"lo": "00:00:00:00:00:00", "net1": "02:00:00:00:00:01"}
    assert vfio == ("11", "vfio")


def test_start_phases_are_deltas_of_the_host_histograms() -> None:
    before = {"allocate": (1, 0.010), "call:Attach": (1, 0.100)}
    after = {"allocate": (2, 0.015), "call:Attach": (2, 0.300), "netlink": (0, 0.0)}
    assert delta_ms(before, after, "netlink") is None
    phases = dict(start_phases(before, after, run_s=1.5, prepare_ms=500.0))
    assert phases["host: choose VFs, commit leases"] == pytest.approx(5.0)
    assert phases["guest: of it after the host replied (find, bind)"] == pytest.approx(300.0)
    assert phases["containerd: RunPodSandbox, whole"] == pytest.approx(1500.0)


def test_frames_from_counts_frames_by_source_mac() -> None:
    header = struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1)

    def record(src: str) -> bytes:
        frame = bytes.fromhex("020000000000") + bytes.fromhex(src.replace(":", "")) + b"\x08\x00" + b"\0" * 46
        return struct.pack("<IIII", 0, 0, len(frame), len(frame)) + frame

    pcap = header + record("02:aa:00:00:00:01") * 3 + record("02:bb:00:00:00:02")
    assert frames_from(pcap, "02:aa:00:00:00:01") == 3
    assert frames_from(pcap, "02:bb:00:00:00:02") == 1
    with pytest.raises(ValueError, match="pcap"):
        frames_from(b"nope", "02:aa:00:00:00:01")


def test_sent_by_testpmd_is_the_last_accumulated_figure() -> None:
    out = "RX-packets: 3 TX-packets: 10\n...\n  TX-packets: 64             TX-dropped: 0\n"
    assert sent_by_testpmd(out) == 64
    assert sent_by_testpmd("EAL: no ports") is None
