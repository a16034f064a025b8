"""Pure libvirt XML for hot-plug: the device XML we attach and what we read back from a live domain XML.

No libvirt calls here: functions take and return strings or frozen dataclasses, and are golden-tested.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass
from enum import Enum

from contract.pci import PciAddress
from host_side.backends.base import ALIAS_PREFIX, PluggedDevice, VfSettings


class HotplugMode(Enum):
    """How a VF (or its lab stand-in) is described to libvirt."""

    # Production: libvirt binds the VF to vfio-pci and sets MAC and VLAN on the PF itself.
    INTERFACE_HOSTDEV = "interface-hostdev"
    # Production alternative: plain PCI passthrough; MAC/VLAN come only from our netlink setup.
    HOSTDEV = "hostdev"
    # Labs and CI only: an emulated NIC with the lease's MAC, so everything but the VF itself is real.
    EMULATED_NIC = "emulated-nic"


# QEMU models an emulated-nic device may use; all of them are PCIe-capable and carry a MAC.
EMULATED_NIC_MODELS = ("e1000e", "virtio")


@dataclass(frozen=True)
class RootPort:
    """A pcie-root-port controller of a domain: its controller index (the bus its child sits on)."""

    index: int
    occupied: bool


def _pci_address(parent: ET.Element, addr: PciAddress) -> None:
    ET.SubElement(
        parent,
        "address",
        type="pci",
        domain=f"0x{addr.domain:04x}",
        bus=f"0x{addr.bus:02x}",
        slot=f"0x{addr.slot:02x}",
        function=f"0x{addr.function:x}",
    )


def _root_port_address(parent: ET.Element, port_index: int) -> None:
    # A root port has one downstream slot; its child is always slot 0 of the bus numbered by the port index.
    _pci_address(parent, PciAddress(0, port_index, 0, 0))


def device_xml(
    mode: HotplugMode,
    *,
    vf_pci: PciAddress,
    alias: str,
    settings: VfSettings,
    port_index: int,
    nic_model: str = "e1000e",
) -> str:
    """The `<interface>`/`<hostdev>` element to hot-plug for one lease, placed on root port `port_index`."""
    if mode is HotplugMode.HOSTDEV:
        root = ET.Element("hostdev", mode="subsystem", type="pci", managed="yes")
        source = ET.SubElement(root, "source")
        _pci_address(source, vf_pci)
    elif mode is HotplugMode.INTERFACE_HOSTDEV:
        root = ET.Element("interface", type="hostdev", managed="yes")
        ET.SubElement(root, "mac", address=settings.mac)
        source = ET.SubElement(root, "source")
        _pci_address(source, vf_pci)
        if settings.vlan:
            vlan = ET.SubElement(root, "vlan")
            ET.SubElement(vlan, "tag", id=str(settings.vlan))
    else:
        # QEMU user networking: the guest gets a NIC whose traffic goes nowhere unless the guest routes it.
        # The VLAN is not modelled: there is no VF whose PF could tag.
        root = ET.Element("interface", type="user")
        ET.SubElement(root, "mac", address=settings.mac)
        ET.SubElement(root, "model", type=nic_model)
    ET.SubElement(root, "alias", name=alias)
    _root_port_address(root, port_index)
    ET.indent(root)  # one element per line: the XML is logged and kept as golden files
    return ET.tostring(root, encoding="unicode")


def _address_of(elem: ET.Element) -> PciAddress | None:
    addr = elem.find("address")
    if addr is None or addr.get("type") != "pci":
        return None
    try:
        return PciAddress(
            int(addr.get("domain", "0"), 0),
            int(addr.get("bus", "0"), 0),
            int(addr.get("slot", "0"), 0),
            int(addr.get("function", "0"), 0),
        )
    except ValueError:
        return None


def _devices(domain_xml: str) -> ET.Element:
    devices = ET.fromstring(domain_xml).find("devices")
    if devices is None:
        raise ValueError("domain XML has no <devices> element")
    return devices


def root_ports(domain_xml: str) -> tuple[RootPort, ...]:
    """The domain's pcie-root-ports, in index order, each marked occupied if a device sits on its bus."""
    devices = _devices(domain_xml)
    ports = sorted(
        int(c.get("index", "-1"))
        for c in devices.findall("controller")
        if c.get("type") == "pci" and c.get("model") == "pcie-root-port"
    )
    # Any element whose PCI address is on a port's bus (a NIC, a disk, a bridge) occupies that port.
    used_buses = {addr.bus for dev in devices if (addr := _address_of(dev)) is not None}
    return tuple(RootPort(index=i, occupied=i in used_buses) for i in ports)


def free_root_port(domain_xml: str) -> int | None:
    """The lowest-index free pcie-root-port of the domain, or None when every port is taken."""
    for port in root_ports(domain_xml):
        if not port.occupied:
            return port.index
    return None


def plugged_devices(domain_xml: str) -> dict[str, PluggedDevice]:
    """Our devices (alias starts with ALIAS_PREFIX) in a live domain XML, by alias."""
    found: dict[str, PluggedDevice] = {}
    for dev in _devices(domain_xml):
        if dev.tag not in ("interface", "hostdev"):
            continue
        alias_elem = dev.find("alias")
        alias = alias_elem.get("name", "") if alias_elem is not None else ""
        if not alias.startswith(ALIAS_PREFIX):
            continue
        mac_elem = dev.find("mac")
        mac = mac_elem.get("address") if mac_elem is not None else None
        found[alias] = PluggedDevice(alias=alias, guest_pci=_address_of(dev), mac=mac)
    return found
