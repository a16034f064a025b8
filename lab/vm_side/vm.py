"""The lab guest on the host side: its domain XML (pure), the private libvirtd, the root export, the VM.

The guest is the libvirt test bed's guest grown up: q35 under TCG with 2 vCPUs, an emulated Intel IOMMU (real
IOMMU groups, so vfio-pci works), spare pcie-root-ports for hot-plug, this machine's root over 9p, a
virtio-serial port for the lab agent and a QEMU user-network NIC whose only reachable address is the
guestfwd to the host service. Every fixed device sits on pcie.0 at an explicit slot so that all root ports
stay free for hot-plug. Facts: shared notes "libvirt-qemu-lab" §10.
"""

from __future__ import annotations

import logging
import subprocess
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from lab.domain import GuestBoot, element, guest_domain
from testbed.libvirt_vm import TestVm

log = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parents[2]
LAB_DIR = REPO / "build" / "lab"
KERNEL = REPO / "build" / "libvirt" / "vmlinux"
INITRD = LAB_DIR / "kernel" / "initramfs.cpio.gz"

QEMU_NS = "http://libvirt.org/schemas/domain/qemu/1.0"
AGENT_PORT = "vfhp.lab.agent"
# The guest reaches the host service at this address; QEMU's user network forwards it (guestfwd).
SERVICE_IP = "10.0.2.100"
SERVICE_PORT = 50151
SERVICE_NIC_MAC = "52:54:00:5e:00:01"
# pcie.0 slots of the fixed devices (root ports take slot 1 with its functions, libvirt's default).
_SLOT_9P, _SLOT_SERIAL, _SLOT_SVC = 0x05, 0x06, 0x07
READY = "LAB-AGENT-READY"
FAILED_MARKERS = ("LAB-INITRAMFS-FAILED", "LAB-INIT-FAILED", "LAB-AGENT-EXIT", "Kernel panic")


@dataclass(frozen=True)
class LabVmSpec:
    name: str
    console_log: Path
    agent_socket: Path
    root_export: Path
    # socat address the guest's service connections are forwarded to, e.g. TCP:127.0.0.1:50151.
    service_target: str
    root_ports: int = 4
    memory_mib: int = 1536
    vcpus: int = 2
    kernel: Path = KERNEL
    initrd: Path = INITRD
    repo: Path = REPO


def _pcie0(parent: ET.Element, slot: int) -> None:
    ET.SubElement(
        parent, "address", type="pci", domain="0x0000", bus="0x00", slot=f"0x{slot:02x}", function="0x0"
    )


def lab_domain_xml(spec: LabVmSpec) -> str:
    """The lab domain: the lab's guest domain (lab.domain) plus the VM side's devices."""
    ET.register_namespace("qemu", QEMU_NS)
    # no_timer_check: on a busy host TCG can miss the kernel's IO-APIC timer test, which panics with
    # interrupt remapping on ("timer doesn't work through Interrupt-remapped IO-APIC").
    cmdline = (
        f"console=ttyS0 quiet panic=-1 intel_iommu=on no_timer_check lab.repo={spec.repo} "
        f"lab.init={spec.repo}/lab/vm_side/guest/init.sh "
        f"lab.svcmac={SERVICE_NIC_MAC} lab.agentport={AGENT_PORT}"
    )
    dom = guest_domain(
        GuestBoot(
            spec.name,
            kernel=spec.kernel,
            initrd=spec.initrd,
            console_log=spec.console_log,
            cmdline=cmdline,
            root_ports=spec.root_ports,
            memory_mib=spec.memory_mib,
            vcpus=spec.vcpus,
        )
    )
    ET.SubElement(dom, "cpu", mode="maximum", check="none")
    features = element(dom, "features")
    # intremap needs the split irqchip, which libvirt selects with the QEMU ioapic.
    ET.SubElement(features, "ioapic", driver="qemu")
    tcg = ET.SubElement(features, "tcg")
    # A 256 MiB translation cache keeps QEMU near 800 MiB instead of ~1 GiB with the default.
    ET.SubElement(tcg, "tb-cache", unit="MiB").text = "256"

    devices = element(dom, "devices")
    iommu = ET.SubElement(devices, "iommu", model="intel")
    ET.SubElement(iommu, "driver", intremap="on")
    fs = ET.SubElement(devices, "filesystem", type="mount", accessmode="passthrough")
    ET.SubElement(fs, "source", dir=str(spec.root_export))
    ET.SubElement(fs, "target", dir="labroot")
    ET.SubElement(fs, "readonly")
    _pcie0(fs, _SLOT_9P)
    serial_ctl = ET.SubElement(devices, "controller", type="virtio-serial", index="0")
    _pcie0(serial_ctl, _SLOT_SERIAL)
    channel = ET.SubElement(devices, "channel", type="unix")
    # QEMU listens; the host side connects whenever it likes and may reconnect.
    ET.SubElement(channel, "source", mode="bind", path=str(spec.agent_socket))
    ET.SubElement(channel, "target", type="virtio", name=AGENT_PORT)

    # Not expressible as libvirt XML: a user network whose only reachable address is the guestfwd, which
    # spawns one socat per guest connection (so gRPC gets a real connection each time; needs QEMU's
    # seccomp sandbox off, see testbed/libvirt/start.sh --private).
    netdev = (
        f"user,id=vfhpsvc,restrict=on,guestfwd=tcp:{SERVICE_IP}:{SERVICE_PORT}"
        f"-cmd:socat -t0.02 - {spec.service_target}"
    )
    device = f"virtio-net-pci,netdev=vfhpsvc,mac={SERVICE_NIC_MAC},bus=pcie.0,addr=0x{_SLOT_SVC:x}"
    qemu_args = ET.SubElement(dom, f"{{{QEMU_NS}}}commandline")
    for arg in ("-netdev", netdev, "-device", device):
        ET.SubElement(qemu_args, f"{{{QEMU_NS}}}arg", value=arg)
    return ET.tostring(dom, encoding="unicode")


class PrivateLibvirtd:
    """The lab's own libvirtd (testbed/libvirt/start.sh --private): QEMU without seccomp, own socket."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder.resolve()

    @property
    def uri(self) -> str:
        return f"qemu+unix:///system?socket={self.folder}/run/libvirt-sock"

    def pid(self) -> int:
        return int((self.folder / "libvirtd.pid").read_text())

    def start(self) -> None:
        _script("start.sh", "--private", str(self.folder))

    def stop(self) -> None:
        _script("stop.sh", "--private", str(self.folder))

    def export_root(self, target: Path) -> None:
        """A read-only, non-recursive bind mount of / at `target`, made inside libvirtd's mount namespace
        (QEMU runs there), so nothing is mounted on the host itself and it vanishes with the daemon."""
        target.mkdir(parents=True, exist_ok=True)
        script = 'mountpoint -q "$1" || { mount --bind / "$1" && mount -o remount,bind,ro "$1"; }'
        done = subprocess.run(
            ["nsenter", "-t", str(self.pid()), "-m", "sh", "-c", script, "sh", str(target)],
            capture_output=True,
            text=True,
            check=False,
        )
        if done.returncode != 0:
            raise RuntimeError(
                f"cannot export / read-only at {target} for the lab guest: {done.stderr.strip()}"
            )


def _script(name: str, *args: str) -> None:
    done = subprocess.run(
        ["bash", str(REPO / "testbed/libvirt" / name), *args], capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(f"testbed/libvirt/{name} {' '.join(args)} failed: {done.stderr.strip()}")


class LabVm(TestVm):
    """The lab guest; ready when the agent inside says so. Fails fast on the init's failure markers."""

    ready_marker = READY

    def __init__(self, spec: LabVmSpec, uri: str) -> None:
        super().__init__(spec.name, run_dir=spec.console_log.parent, root_ports=spec.root_ports, uri=uri)
        self.console_log = spec.console_log
        self.spec = spec

    def domain_xml(self) -> str:
        for f in (self.spec.kernel, self.spec.initrd):
            if not f.exists():
                raise FileNotFoundError(f"{f} is missing; run `make testbed-lab` first")
        return lab_domain_xml(self.spec)

    def start(self, boot_timeout_s: float = 120.0) -> float:
        self.destroy()  # a lab guest left by an interrupted run
        return super().start(boot_timeout_s)

    def wait_for_console(self, predicate: Callable[[str], bool], timeout_s: float, what: str) -> str:
        """As TestVm's, but a failure marker of the lab's init ends the wait at once with that line."""
        text = super().wait_for_console(
            lambda t: predicate(t) or console_failure(t) is not None, timeout_s, what
        )
        if (failure := console_failure(text)) is not None and not predicate(text):
            tail = "\n".join(text.splitlines()[-20:])
            raise RuntimeError(f"lab guest {self.name} failed to boot: {failure}\nconsole tail:\n{tail}")
        return text


def console_failure(text: str) -> str | None:
    """The first line of a console log that reports a failure of the lab guest's start-up, if any."""
    for line in text.splitlines():
        if any(marker in line for marker in FAILED_MARKERS):
            return line.strip()
    return None
