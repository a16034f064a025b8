"""The lab's guest domains, one builder for both levels (pure): the test bed's q35 TCG domain
(testbed.libvirt_vm.domain_xml) booting a given kernel, initramfs and command line, with the memory and
vCPUs a level asks for. The VM side adds its devices to the element this returns."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

from testbed.libvirt_vm import domain_xml


@dataclass(frozen=True)
class GuestBoot:
    name: str
    kernel: Path
    initrd: Path
    console_log: Path
    cmdline: str
    root_ports: int = 4
    memory_mib: int | None = None  # None: the test bed's
    vcpus: int | None = None


def element(dom: ET.Element, path: str) -> ET.Element:
    """The element at `path` of a domain this module built."""
    found = dom.find(path)
    if found is None:
        raise ValueError(f"the test bed's domain XML has no <{path}>")
    return found


def guest_domain(boot: GuestBoot) -> ET.Element:
    """The domain as an element tree, for a level to add to."""
    dom = ET.fromstring(
        domain_xml(
            boot.name,
            kernel=boot.kernel,
            initrd=boot.initrd,
            console_log=boot.console_log,
            root_ports=boot.root_ports,
        )
    )
    element(dom, "os/cmdline").text = boot.cmdline
    if boot.memory_mib is not None:
        element(dom, "memory").text = str(boot.memory_mib)
    if boot.vcpus is not None:
        element(dom, "vcpu").text = str(boot.vcpus)
    return dom
