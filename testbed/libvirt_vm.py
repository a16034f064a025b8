"""The tier C test guest: a q35 TCG domain on the hand-started libvirtd, built by testbed/libvirt/setup.sh.

`TestVm` defines, starts and destroys one transient domain and reads the guest's serial log, where the
initramfs init prints `BOOTED`, `PCI-ADD <bdf> <ven:dev> <driver> <netdev> <mac>` and `PCI-DEL <bdf>`.
"""

from __future__ import annotations

import logging
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import libvirt

log = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parent.parent
IMAGE_DIR = REPO / "build" / "libvirt"
URI = "qemu:///system"


@dataclass(frozen=True)
class GuestPciEvent:
    """One PCI-ADD/PCI-DEL line of the guest's serial log."""

    kind: str  # "add" | "del"
    bdf: str
    vendor_device: str = "-"
    driver: str = "-"
    netdev: str = "-"
    mac: str = "-"


def domain_xml(name: str, *, kernel: Path, initrd: Path, console_log: Path, root_ports: int) -> str:
    """A q35 TCG domain booting `kernel` (PVH vmlinux) + `initrd`, with `root_ports` free pcie-root-ports."""
    dom = ET.Element("domain", type="qemu")
    ET.SubElement(dom, "name").text = name
    ET.SubElement(dom, "memory", unit="MiB").text = "256"
    ET.SubElement(dom, "vcpu").text = "1"
    os_ = ET.SubElement(dom, "os")
    ET.SubElement(os_, "type", arch="x86_64", machine="q35").text = "hvm"
    ET.SubElement(os_, "kernel").text = str(kernel)
    ET.SubElement(os_, "initrd").text = str(initrd)
    ET.SubElement(os_, "cmdline").text = "console=ttyS0 quiet panic=-1"
    features = ET.SubElement(dom, "features")
    ET.SubElement(features, "acpi")
    ET.SubElement(features, "apic")
    ET.SubElement(dom, "on_reboot").text = "destroy"
    ET.SubElement(dom, "on_crash").text = "destroy"
    # QEMU runs as root for this domain only: it reads the image under build/ and writes the console log
    # there without relabelling the repository.
    seclabel = ET.SubElement(dom, "seclabel", type="static", model="dac", relabel="no")
    ET.SubElement(seclabel, "label").text = "+0:+0"
    devices = ET.SubElement(dom, "devices")
    ET.SubElement(devices, "controller", type="usb", model="none")
    ET.SubElement(devices, "controller", type="pci", index="0", model="pcie-root")
    # Root ports 1..N; each is one hot-plug slot, its child appears on guest bus N.
    for index in range(1, root_ports + 1):
        ET.SubElement(devices, "controller", type="pci", index=str(index), model="pcie-root-port")
    serial = ET.SubElement(devices, "serial", type="file")
    ET.SubElement(serial, "source", path=str(console_log))
    ET.SubElement(serial, "target", port="0")
    ET.SubElement(devices, "memballoon", model="none")
    return ET.tostring(dom, encoding="unicode")


def parse_console(text: str) -> list[GuestPciEvent]:
    """The PCI-ADD/PCI-DEL lines of a console log, in order."""
    events = []
    for line in text.splitlines():
        fields = line.strip().split()
        if len(fields) == 6 and fields[0] == "PCI-ADD":
            events.append(GuestPciEvent("add", *fields[1:]))
        elif len(fields) == 2 and fields[0] == "PCI-DEL":
            events.append(GuestPciEvent("del", fields[1]))
    return events


class TestVm:
    """One running test guest; `start()` boots it (waits for BOOTED), `destroy()` removes it."""

    __test__ = False  # not a pytest test class

    def __init__(self, name: str, *, run_dir: Path, root_ports: int = 4, uri: str = URI) -> None:
        self.name = name
        self.console_log = run_dir.resolve() / f"{name}.console.log"
        self._root_ports = root_ports
        self._uri = uri
        self._conn: libvirt.virConnect | None = None

    def _connection(self) -> libvirt.virConnect:
        if self._conn is None:
            self._conn = libvirt.open(self._uri)
        return self._conn

    @property
    def domain(self) -> libvirt.virDomain:
        try:
            return self._connection().lookupByName(self.name)
        except libvirt.libvirtError as e:
            # Tests restart libvirtd under the running guest; without an event loop this connection
            # only notices on its next call, so reconnect once.
            if e.get_error_domain() not in (libvirt.VIR_FROM_RPC, libvirt.VIR_FROM_REMOTE):
                raise
            self._conn = None
            return self._connection().lookupByName(self.name)

    # The console line that says the guest is up; variants (the lab) override it with domain_xml().
    ready_marker = "BOOTED"

    def domain_xml(self) -> str:
        kernel, initrd = IMAGE_DIR / "vmlinux", IMAGE_DIR / "initramfs.cpio.gz"
        if not kernel.exists() or not initrd.exists():
            raise FileNotFoundError(f"{IMAGE_DIR} has no guest image; run `make testbed-libvirt` first")
        return domain_xml(
            self.name,
            kernel=kernel,
            initrd=initrd,
            console_log=self.console_log,
            root_ports=self._root_ports,
        )

    def start(self, boot_timeout_s: float = 60.0) -> float:
        """Boots the guest; returns the seconds from createXML to the ready marker."""
        xml = self.domain_xml()
        self.console_log.parent.mkdir(parents=True, exist_ok=True)
        self.console_log.unlink(missing_ok=True)
        t0 = time.monotonic()
        self._connection().createXML(xml, 0)
        try:
            self.wait_for_console(lambda text: self.ready_marker in text, boot_timeout_s, self.ready_marker)
        except TimeoutError:
            self.destroy()
            raise
        boot_s = time.monotonic() - t0
        log.info("test guest %s booted in %.2f s", self.name, boot_s)
        return boot_s

    def console(self) -> str:
        try:
            return self.console_log.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def pci_events(self) -> list[GuestPciEvent]:
        return parse_console(self.console())

    def wait_for_console(self, predicate: Callable[[str], bool], timeout_s: float, what: str) -> str:
        """Polls the console log until `predicate(text)` is true; raises TimeoutError naming `what`."""
        deadline = time.monotonic() + timeout_s
        while True:
            text = self.console()
            if predicate(text):
                return text
            if time.monotonic() > deadline:
                tail = "\n".join(text.splitlines()[-15:])
                raise TimeoutError(
                    f"guest {self.name}: no {what} within {timeout_s} s; console tail:\n{tail}"
                )
            time.sleep(0.05)

    def has_device(self, bdf: str, mac: str) -> bool:
        """The guest reported a device at `bdf` with a netdev of MAC `mac` (ever)."""
        return any(e.kind == "add" and e.bdf == bdf and e.mac == mac for e in self.pci_events())

    def lost_device(self, bdf: str) -> bool:
        """The guest's last report about `bdf` is its removal."""
        events = [e for e in self.pci_events() if e.bdf == bdf]
        return bool(events) and events[-1].kind == "del"

    def wait_for_device(self, bdf: str, mac: str, timeout_s: float) -> None:
        self.wait_for_console(lambda _: self.has_device(bdf, mac), timeout_s, f"PCI-ADD {bdf} with MAC {mac}")

    def wait_for_removal(self, bdf: str, timeout_s: float) -> None:
        self.wait_for_console(lambda _: self.lost_device(bdf), timeout_s, f"PCI-DEL {bdf}")

    def destroy(self) -> None:
        try:
            self.domain.destroy()
        except libvirt.libvirtError as e:
            if e.get_error_code() != libvirt.VIR_ERR_NO_DOMAIN:
                raise
        if self._conn is not None:
            self._conn.close()
            self._conn = None
