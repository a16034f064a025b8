"""Golden and parsing tests of the pure libvirt XML functions."""

from __future__ import annotations

from pathlib import Path

import pytest

from contract.pci import PciAddress
from host_side.backends.base import PluggedDevice, VfSettings
from host_side.backends.libvirt_xml import (
    HotplugMode,
    RootPort,
    device_xml,
    free_root_port,
    plugged_devices,
    root_ports,
)

HERE = Path(__file__).parent
# Recorded from libvirtd 9.0 (tier C guest, 4 root ports): our e1000e on port 1, someone else's virtio
# NIC (alias without our prefix) on port 3. Host paths replaced by REPO/RUN.
LIVE = (HERE / "data" / "live_domain.xml").read_text()
VF = PciAddress.parse("0000:3b:10.2")
SETTINGS = VfSettings(mac="52:54:00:aa:00:01", vlan=42)


@pytest.mark.parametrize(
    ("mode", "port", "model"),
    [
        (HotplugMode.INTERFACE_HOSTDEV, 2, "e1000e"),
        (HotplugMode.HOSTDEV, 3, "e1000e"),
        (HotplugMode.EMULATED_NIC, 1, "virtio"),
    ],
    ids=lambda v: getattr(v, "value", str(v)),
)
def test_device_xml_matches_golden(mode: HotplugMode, port: int, model: str) -> None:
    got = device_xml(
        mode, vf_pci=VF, alias="ua-vfhp-lease-7", settings=SETTINGS, port_index=port, nic_model=model
    )
    assert got + "\n" == (HERE / "golden" / f"{mode.value}.xml").read_text()


def test_untagged_interface_hostdev_has_no_vlan_element() -> None:
    got = device_xml(
        HotplugMode.INTERFACE_HOSTDEV,
        vf_pci=VF,
        alias="ua-vfhp-x",
        settings=VfSettings(mac="52:54:00:aa:00:01"),
        port_index=1,
    )
    assert "<vlan" not in got
    assert '<mac address="52:54:00:aa:00:01" />' in got


def test_root_ports_of_recorded_live_xml() -> None:
    assert root_ports(LIVE) == (
        RootPort(1, occupied=True),
        RootPort(2, occupied=False),
        RootPort(3, occupied=True),
        RootPort(4, occupied=False),
    )
    assert free_root_port(LIVE) == 2


def test_no_free_root_port_when_every_port_has_a_child() -> None:
    xml = LIVE.replace("bus='0x00' slot='0x1f'", "bus='0x02' slot='0x00'").replace(
        "<memballoon model='none'/>",
        "<memballoon model='virtio'><address type='pci' domain='0x0000' bus='0x04' slot='0x00' "
        "function='0x0'/></memballoon>",
    )
    assert free_root_port(xml) is None


def test_domain_without_root_ports_has_none_free() -> None:
    assert (
        free_root_port("<domain><devices><controller type='pci' model='pcie-root'/></devices></domain>")
        is None
    )


def test_plugged_devices_lists_only_our_aliases() -> None:
    assert plugged_devices(LIVE) == {
        "ua-vfhp-rec-1": PluggedDevice(
            alias="ua-vfhp-rec-1", guest_pci=PciAddress(0, 1, 0, 0), mac="52:54:00:aa:00:01"
        )
    }


def test_plugged_hostdev_has_no_mac() -> None:
    dev = device_xml(HotplugMode.HOSTDEV, vf_pci=VF, alias="ua-vfhp-h", settings=SETTINGS, port_index=3)
    xml = f"<domain><devices>{dev}</devices></domain>"
    assert plugged_devices(xml) == {"ua-vfhp-h": PluggedDevice("ua-vfhp-h", PciAddress(0, 3, 0, 0), None)}


def test_xml_without_devices_is_an_error() -> None:
    with pytest.raises(ValueError, match="no <devices>"):
        plugged_devices("<domain/>")
