"""Tier D check, run inside the outer guest (L1) that plays the physical host (started by l1-init.sh).

Drives the project's own adapters against real igbvf VFs of an emulated igb PF, this machine's libvirtd 9.0
and an inner TCG guest (L2) whose init reports PCI add/remove on its serial console. It records what it
observes (settings read back through netlink and through `ip -j -d link show`, guest PCI events, live
aliases, VF drivers, libvirt error codes, timings) in a JSON file; tests/lab/test_sriov.py asserts on it
on this machine. A failing step is recorded with its traceback and the next step still runs.

Usage (in L1): python -m lab.sriov.check --pf PF --result FILE --work DIR
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
import traceback
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import Any

import libvirt

from contract.errors import HostSideError
from contract.host_api import HostCallError, VfRequest
from contract.pci import PciAddress
from host_side import pki
from host_side.api.client import HostClient
from host_side.backends.base import VfRef, VfSettings, lease_alias
from host_side.backends.libvirt_errors import LibvirtFailure, translate
from host_side.backends.libvirt_hotplug import LibvirtHotplug
from host_side.backends.libvirt_xml import HotplugMode, device_xml, free_root_port
from host_side.backends.vf_netlink import PyrouteVfNetlink
from host_side.config import PoolConfig
from host_side.inventory import SysfsInventory
from testbed.libvirt_vm import GuestPciEvent, TestVm, domain_xml

log = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parents[2]
BUILD = REPO / "build" / "lab-d"
URI = "qemu:///system"
L2 = "labd-l2"
VF_IDS = "8086:10ca"  # igbvf, as the inner guest's oracle prints vendor:device
NON_VF_IDS = "8086:10d3"  # the spare e1000e run.py gives L1
# Nested TCG is slow: the inner guest polls PCI every 0.2 s but one poll can take seconds.
# Generous: on a machine shared with other TCG guests one step can take ten times its usual time.
GUEST_TIMEOUT_S = 180.0
LIBVIRT_TIMEOUT_S = 120.0
# How long the paused guest is kept paused while its detach is pending (libvirt's own wait is 5 s).
PAUSE_S = 10.0


class Sysfs:
    """PCI facts the check reads as its oracle (a device's driver and ids), under `root`; VF discovery is
    the project's own SysfsInventory."""

    def __init__(self, root: Path = Path("/sys")) -> None:
        self._root = root

    def _dev(self, pci: PciAddress) -> Path:
        return self._root / "bus/pci/devices" / str(pci)

    def driver(self, pci: PciAddress) -> str | None:
        link = self._dev(pci) / "driver"
        return link.readlink().name if link.exists() else None

    def ids(self, pci: PciAddress) -> str:
        dev = self._dev(pci)
        return ":".join((dev / f).read_text().strip().removeprefix("0x") for f in ("vendor", "device"))

    def find(self, ids: str) -> PciAddress | None:
        for dev in sorted((self._root / "bus/pci/devices").iterdir()):
            pci = PciAddress.parse(dev.name)
            if self.ids(pci) == ids:
                return pci
        return None


def ip_vf_view(pf: str, index: int) -> dict[str, Any]:
    """VF `index` of `pf` as iproute2 reports it: the independent oracle for what netlink set."""
    proc = subprocess.run(
        ["ip", "-j", "-d", "link", "show", "dev", pf], capture_output=True, text=True, check=True
    )
    for vf in json.loads(proc.stdout)[0].get("vfinfo_list", []):
        if vf["vf"] == index:
            vlan = (vf.get("vlan_list") or [{}])[0]
            return {
                "mac": vf.get("address"),
                "vlan": vlan.get("vlan", 0),
                "qos": vlan.get("qos", 0),
                "spoofchk": vf.get("spoofchk"),
                "trust": vf.get("trust"),
                "max_tx_rate": vf.get("rate", {}).get("max_tx", 0),
            }
    raise LookupError(f"ip link show {pf} lists no VF {index}")


def failure_of(fn: Callable[[], object]) -> dict[str, Any]:
    """Runs `fn`, expecting a host-side error; returns its class, the libvirt code behind it and message."""
    try:
        fn()
    except HostSideError as e:
        cause = e.__cause__
        code = cause.get_error_code() if isinstance(cause, libvirt.libvirtError) else None
        return {"raised": type(e).__name__, "libvirt_code": code, "message": str(e)}
    return {"raised": None, "libvirt_code": None, "message": ""}


class Recorder:
    """Observations, timings and step errors, written as JSON after every step (a crash keeps the rest)."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self.data: dict[str, Any] = {"observations": {}, "timings": {}, "steps": {}}
        self._t0 = time.monotonic()

    def put(self, key: str, value: object) -> None:
        self.data["observations"][key] = value

    def time(self, key: str, seconds: float) -> None:
        self.data["timings"][key] = round(seconds, 3)

    @contextmanager
    def step(self, name: str) -> Iterator[None]:
        t0 = time.monotonic()
        log.info("step %s", name)
        try:
            yield
        except Exception:
            log.exception("step %s failed", name)
            self.data["steps"][name] = {"ok": False, "error": traceback.format_exc()}
        else:
            self.data["steps"][name] = {"ok": True}
        finally:
            self.data["steps"][name]["seconds"] = round(time.monotonic() - t0, 3)
            self.write()

    def write(self) -> None:
        self.data["total_s"] = round(time.monotonic() - self._t0, 3)
        self._path.write_text(json.dumps(self.data, indent=1, sort_keys=True))


class GuestOracle:
    """Waits for the inner guest's PCI-ADD/PCI-DEL lines that appear after a mark."""

    def __init__(self, vm: TestVm) -> None:
        self._vm = vm
        self._mark = 0

    def mark(self) -> None:
        self._mark = len(self._vm.pci_events())

    def wait(
        self, kind: str, match: Callable[[GuestPciEvent], bool], what: str
    ) -> tuple[GuestPciEvent, float]:
        t0 = time.monotonic()
        while time.monotonic() - t0 < GUEST_TIMEOUT_S:
            for event in self._vm.pci_events()[self._mark :]:
                if event.kind == kind and match(event):
                    return event, time.monotonic() - t0
            time.sleep(0.1)
        raise TimeoutError(f"inner guest showed no {what} within {GUEST_TIMEOUT_S} s")


class L2Vm(TestVm):
    """The inner guest: tier C's busybox guest, with igbvf in its initramfs (built by setup.sh)."""

    def domain_xml(self) -> str:
        kernel, initrd = BUILD / "vmlinux", BUILD / "l2-initramfs.cpio.gz"
        if not kernel.exists() or not initrd.exists():
            raise FileNotFoundError(f"{kernel} or {initrd} missing; run lab/sriov/setup.sh first")
        dom = ET.fromstring(
            domain_xml(self.name, kernel=kernel, initrd=initrd, console_log=self.console_log, root_ports=4)
        )
        cmdline = dom.find("os/cmdline")
        if cmdline is None:
            raise ValueError("the tier C domain XML has no <os><cmdline>")
        # Not quiet: kernel warnings (an RCU stall of the nested guest) land in the console log next to the
        # PCI-ADD/PCI-DEL lines, whose parser skips them. no_timer_check: the boot-time IO-APIC timer test
        # misjudges a guest this slow ("MP-BIOS bug: 8254 timer not connected") and the guest's timers
        # then stall.
        cmdline.text = "console=ttyS0 loglevel=4 no_timer_check panic=-1"
        return ET.tostring(dom, encoding="unicode")


SERVICE_IDENTITY = "labd-l2"  # the inner guest's client certificate name = its [vms.*] key
POOL = "igb"


def service_config(*, pf: str, port: int, pki_dir: Path, detach_s: float) -> str:
    """`vfhotplug-host` config for L1: the production libvirt backend over the real igb PF."""
    return f"""# vfhotplug-host in tier D's L1 (written by lab/sriov/check.py)
backend = "libvirt"
hotplug_mode = "interface-hostdev"
libvirt_uri = "{URI}"
state_dir = "state"
sysfs_root = "/sys"

[listen]
tcp = "127.0.0.1:{port}"
ca = "{pki_dir}/ca.pem"
cert = "{pki_dir}/host.pem"
key = "{pki_dir}/host.key"
admin_socket = "run/admin.sock"

[timeouts]
attach_s = {LIBVIRT_TIMEOUT_S}
detach_s = {detach_s}

[pools.{POOL}]
pfs = ["{pf}"]

[vms.{SERVICE_IDENTITY}]
domain = "{L2}"
quota = 2
pools = ["{POOL}"]
"""


class ServiceInL1:
    """`vfhotplug-host serve` as a child process, with a fresh PKI, state and config under `folder`."""

    def __init__(self, folder: Path, pf: str, *, detach_s: float) -> None:
        self.folder = folder
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = int(probe.getsockname()[1])
        pki_dir = folder / "pki"
        pki_dir.mkdir(parents=True)
        pki.init_ca(pki_dir)
        pki.issue(pki_dir, "host", server=True, sans=["127.0.0.1"])
        self.client_cert = pki.issue(pki_dir, SERVICE_IDENTITY)
        self.ca = pki_dir / "ca.pem"
        (folder / "run").mkdir()
        self.config = folder / "host.toml"
        self.config.write_text(service_config(pf=pf, port=self.port, pki_dir=pki_dir, detach_s=detach_s))
        self.log = folder / "host.log"
        self._proc: subprocess.Popen[bytes] | None = None
        self._launched_at = 0.0

    def launch(self) -> None:
        """Starts the process; it imports and reconciles while the inner guest boots."""
        self._launched_at = time.monotonic()
        with self.log.open("ab") as out:
            self._proc = subprocess.Popen(
                [sys.executable, "-m", "host_side", "serve", "--config", str(self.config)],
                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )  # fmt: skip

    def wait_ready(self, timeout_s: float = 180.0) -> float:
        """Waits until the admin socket answers Health; returns the seconds since launch()."""
        if self._proc is None:
            raise RuntimeError("vfhotplug-host was not launched")
        while True:
            if self._proc.poll() is not None:
                raise RuntimeError(f"vfhotplug-host exited with {self._proc.returncode}; see {self.log}")
            try:
                with HostClient.unix(self.folder / "run/admin.sock") as admin:
                    admin.health(timeout_s=2.0)
                return time.monotonic() - self._launched_at
            except HostCallError:
                if time.monotonic() - self._launched_at > timeout_s:
                    break
                time.sleep(0.2)
        raise TimeoutError(f"vfhotplug-host did not answer within {timeout_s} s; see {self.log}")

    def vm_client(self) -> HostClient:
        """The inner guest's view: mTLS over TCP with its own client certificate."""
        return HostClient(
            f"127.0.0.1:{self.port}", ca=self.ca, cert=self.client_cert.cert, key=self.client_cert.key
        )

    def stop(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            self._proc.wait(30)


class Check:
    """The batched checks of one L1 boot, in order; each records into the Recorder."""

    def __init__(self, pf: str, rec: Recorder, work: Path) -> None:
        self.rec = rec
        self.sysfs = Sysfs()
        self.nl = PyrouteVfNetlink()
        self.pf = pf
        self.work = work
        pool = PoolConfig(
            name=POOL, pfs=(pf,), vf_indexes=None, default_vlan=0, allow_trust=True,
            allow_spoofchk_off=True, max_per_vm=0, warm_spares=0,
        )  # fmt: skip
        self.inventory = SysfsInventory(Path("/sys"), [pool]).scan()
        self.vfs = sorted((info.ref for info in self.inventory.vfs), key=lambda ref: ref.index)
        self.vm = L2Vm(L2, run_dir=work)
        self.svc: ServiceInL1 | None = None
        self._ifhd_before = VfSettings(mac="00:00:00:00:00:00")  # set by interface_hostdev
        self.guest = GuestOracle(self.vm)
        self.ifhd = LibvirtHotplug(URI, mode="interface-hostdev", observe=self._observer("interface-hostdev"))
        self.hostdev_hp = LibvirtHotplug(URI, mode="hostdev", observe=self._observer("hostdev"))
        self._phase_counts: dict[str, int] = {}

    def _observer(self, mode: str) -> Callable[[str, float], None]:
        def observe(phase: str, seconds: float) -> None:
            n = self._phase_counts.get(f"{mode}.{phase}", 0) + 1
            self._phase_counts[f"{mode}.{phase}"] = n
            self.rec.time(f"{mode}.{phase}.{n}", seconds)

        return observe

    def pf_view(self, vf: VfRef) -> dict[str, Any]:
        return {"netlink": asdict(self.nl.read_vf(vf)), "ip": ip_vf_view(self.pf, vf.index)}

    def live_aliases(self) -> list[str]:
        return sorted(self.ifhd.live_devices(L2))

    def discover(self) -> None:
        self.rec.put("pf", {"name": self.pf, "missing": list(self.inventory.missing_pfs),
                            "pci": str(self.vfs[0].pf_pci) if self.vfs else None,
                            "ids": self.sysfs.ids(self.vfs[0].pf_pci) if self.vfs else None})  # fmt: skip
        self.rec.put(
            "vfs",
            [{"index": v.ref.index, "pci": str(v.ref.pci), "pf_pci": str(v.ref.pf_pci), "ids": self.sysfs.ids(v.ref.pci),
              "driver": v.driver, "netdev": v.netdev, "iommu_group": v.iommu_group,
              "iommu_group_size": v.iommu_group_size}
             for v in sorted(self.inventory.vfs, key=lambda v: v.ref.index)],
        )  # fmt: skip

    def netlink(self) -> None:
        vf = self.vfs[0]
        original = self.nl.read_vf(vf)
        self.rec.put("netlink.original", self.pf_view(vf))
        wanted = VfSettings(mac="52:54:00:d0:00:01", vlan=42, qos=0, spoofchk=False, trust=True)
        self.rec.put("netlink.wanted", asdict(wanted))
        t0 = time.monotonic()
        self.nl.apply_vf(vf, wanted)
        self.rec.time("netlink.apply", time.monotonic() - t0)
        self.rec.put("netlink.applied", self.pf_view(vf))
        # Rate limiting depends on the PF driver and link speed; record what igb does with it.
        self.rec.put("netlink.rate", failure_of(lambda: self.nl.apply_vf(vf, VfSettings(mac=wanted.mac, vlan=42,
                     spoofchk=False, trust=True, max_tx_rate_mbps=100))))  # fmt: skip
        self.rec.put("netlink.rate_view", self.pf_view(vf))
        self.rec.put("netlink.restore", failure_of(lambda: self.nl.apply_vf(vf, original)))
        self.rec.put("netlink.restored", self.pf_view(vf))

    def boot_l2(self) -> None:
        self.rec.time("l2.boot", self.vm.start(boot_timeout_s=480.0))

    def interface_hostdev(self) -> None:
        vf = self.vfs[0]
        self.rec.put("ifhd.before", self.pf_view(vf))
        before = self.nl.read_vf(vf)
        alias = lease_alias("labd-ifhd0")
        settings = VfSettings(mac="52:54:00:d0:00:02", vlan=100)
        self.rec.put("ifhd.settings", asdict(settings))
        self._plug("ifhd", self.ifhd, vf, alias, settings)
        self.rec.put("ifhd.attached_aliases", self.live_aliases())

        # The VF is held by L2: a second lease on it must be refused by libvirt, and leave nothing behind.
        dup = lease_alias("labd-dup")
        self.rec.put(
            "in_use", failure_of(lambda: self.hostdev_hp.attach(L2, vf, dup, settings, LIBVIRT_TIMEOUT_S))
        )
        self.rec.put("in_use.aliases", self.live_aliases())
        self._ifhd_before = before

    def interface_hostdev_release(self) -> None:
        vf, before, alias = self.vfs[0], self._ifhd_before, lease_alias("labd-ifhd0")
        self._unplug("ifhd", self.ifhd, vf, alias)
        self.rec.put("ifhd.left_by_libvirt", self.pf_view(vf))
        # Putting the VF's settings back is the host service's job on release; do what it does.
        self.nl.apply_vf(vf, before)
        self.rec.put("ifhd.restored", self.pf_view(vf))
        # A second release of the same lease finds nothing to do (idempotent, no error).
        self.rec.put("ifhd.detach_again", failure_of(lambda: self.ifhd.detach(L2, alias, LIBVIRT_TIMEOUT_S)))

    def _plug(self, key: str, hp: LibvirtHotplug, vf: VfRef, alias: str, settings: VfSettings) -> None:
        """Attach through the adapter; records the call time, what the PF, sysfs and the guest show."""
        self.guest.mark()
        t0 = time.monotonic()
        device = hp.attach(L2, vf, alias, settings, LIBVIRT_TIMEOUT_S)
        self.rec.time(f"{key}.attach", time.monotonic() - t0)
        self.rec.put(
            f"{key}.plugged", {"alias": device.alias, "guest_pci": str(device.guest_pci), "mac": device.mac}
        )
        self.rec.put(f"{key}.attached", self.pf_view(vf))
        self.rec.put(f"{key}.attached_driver", self.sysfs.driver(vf.pci))
        # Match the guest's line by the address libvirt gave this device: with two VFs plugged, one guest
        # scan may report both, and the other VF's line must not be taken for this one.
        where = str(device.guest_pci) if device.guest_pci is not None else None
        event, seen = self.guest.wait(
            "add",
            lambda e: e.vendor_device == VF_IDS and (where is None or e.bdf == where),
            f"PCI-ADD of {VF_IDS} at {where}",
        )
        self.rec.put(f"{key}.guest_add", asdict(event))
        self.rec.time(f"{key}.guest_add_after_attach", seen)

    def _unplug(self, key: str, hp: LibvirtHotplug, vf: VfRef, alias: str) -> None:
        """Detach (returns on DEVICE_REMOVED); records aliases, the VF's driver and the guest's PCI-DEL."""
        bdf = self.rec.data["observations"][f"{key}.guest_add"]["bdf"]
        self.guest.mark()
        t0 = time.monotonic()
        hp.detach(L2, alias, LIBVIRT_TIMEOUT_S)
        self.rec.time(f"{key}.detach", time.monotonic() - t0)
        self.rec.put(f"{key}.detached_aliases", self.live_aliases())
        self.rec.put(f"{key}.detached_driver", self.sysfs.driver(vf.pci))
        _, seen = self.guest.wait("del", lambda e: e.bdf == bdf, "PCI-DEL of the VF")
        self.rec.time(f"{key}.guest_del_after_detach", seen)

    def hostdev(self) -> None:
        vf = self.vfs[1]
        before = self.nl.read_vf(vf)
        self.rec.put("hostdev.before", self.pf_view(vf))
        # Plain hostdev: MAC and VLAN come from our netlink set-up before the attach, as the service does it.
        settings = VfSettings(mac="52:54:00:d0:00:03", vlan=200)
        self.nl.apply_vf(vf, settings)
        alias = lease_alias("labd-hd1")
        self._plug("hostdev", self.hostdev_hp, vf, alias, settings)
        self._unplug("hostdev", self.hostdev_hp, vf, alias)
        self.nl.apply_vf(vf, before)
        self.rec.put("hostdev.restored", self.pf_view(vf))

    def service(self) -> None:
        """The production path: `vfhotplug-host` (backend libvirt) driven over its gRPC API with the inner
        guest's own client certificate."""
        svc = self.svc
        if svc is None:
            raise RuntimeError("the service was not launched (step start_service failed)")
        self.rec.time("service.ready_after_launch", svc.wait_ready())
        try:
            with svc.vm_client() as client:
                self._service_calls(client)
        finally:
            svc.stop()

    def start_service(self) -> None:
        # On L1's tmpfs: SQLite's locking is not for the 9p results share.
        self.svc = ServiceInL1(Path("/tmp/labd-service"), self.pf, detach_s=LIBVIRT_TIMEOUT_S)
        self.svc.launch()

    def _service_calls(self, client: HostClient) -> None:
        health = client.health()
        self.rec.put("service.health", {"backend": health.backend, "identity": health.identity,
                                        "vfs": {f"{p}/{st}": n for (p, st), n in health.vfs.items()}})  # fmt: skip
        by_pci = {str(v.pci): v for v in self.vfs}
        originals = {str(v.pci): self.pf_view(v) for v in self.vfs}
        self.rec.put("service.originals", originals)

        # Pod A gets a VF with the MAC and VLAN it asks for.
        want = VfRequest(pool=POOL, mac="52:54:00:d0:00:05", vlan=300)
        self.guest.mark()
        t0 = time.monotonic()
        (granted,) = client.attach("pod-a-uid", "pod-a", [want], "req-a", LIBVIRT_TIMEOUT_S)
        self.rec.time("service.attach", time.monotonic() - t0)
        vf_a = by_pci[str(granted.host_pci)]
        self.rec.put("service.granted", {"lease_id": granted.lease_id, "host_pci": str(granted.host_pci),
                                         "guest_pci": str(granted.guest_pci), "mac": granted.mac,
                                         "vlan": granted.vlan})  # fmt: skip
        self.rec.put("service.attached", self.pf_view(vf_a))
        self.rec.put("service.attached_driver", self.sysfs.driver(vf_a.pci))
        self.rec.put("service.attached_aliases", self.live_aliases())
        # Match the guest's line by the address libvirt gave this device: with two VFs plugged, one guest
        # scan may report both, and the other VF's line must not be taken for this one.
        where = str(granted.guest_pci) if granted.guest_pci is not None else None
        event, seen = self.guest.wait(
            "add",
            lambda e: e.vendor_device == VF_IDS and (where is None or e.bdf == where),
            f"PCI-ADD of {VF_IDS} at {where}",
        )
        self.rec.put("service.guest_add", asdict(event))
        self.rec.time("service.guest_add_after_attach", seen)

        # The other VF is taken behind the service's back (another tool hot-plugged it); pod B's request
        # lands on it: the in-use error, and no lease left behind.
        (vf_b,) = (v for v in self.vfs if v.pci != vf_a.pci)
        outsider = "ua-outsider-vf"
        conn = libvirt.open(URI)
        try:
            dom = conn.lookupByName(L2)
            port = free_root_port(dom.XMLDesc(0))
            xml = device_xml(HotplugMode.HOSTDEV, vf_pci=vf_b.pci, alias=outsider,
                             settings=VfSettings(mac="52:54:00:d0:00:06"), port_index=port or 0)  # fmt: skip
            self.guest.mark()
            dom.attachDeviceFlags(xml, libvirt.VIR_DOMAIN_AFFECT_LIVE)
            outsider_add, _ = self.guest.wait("add", lambda e: e.vendor_device == VF_IDS, "the outsider's VF")
            self.rec.put("service.in_use_vf_before", self.pf_view(vf_b))
            try:
                client.attach("pod-b-uid", "pod-b", [VfRequest(pool=POOL)], "req-b", LIBVIRT_TIMEOUT_S)
                self.rec.put("service.in_use", {"code": None, "message": ""})
            except HostCallError as e:
                self.rec.put("service.in_use", {"code": e.code, "message": str(e)})
            self.rec.put("service.leases_after_in_use", [
                {"pod_uid": le.pod_uid, "state": le.state, "host_pci": le.host_pci} for le in client.list_leases()
            ])  # fmt: skip
            self.rec.put("service.in_use_vf_view", self.pf_view(vf_b))
            self.guest.mark()
            dom.detachDeviceAlias(outsider, libvirt.VIR_DOMAIN_AFFECT_LIVE)
            self.guest.wait("del", lambda e: e.bdf == outsider_add.bdf, "PCI-DEL of the outsider's VF")
        finally:
            conn.close()

        # Pod A goes away while its VM is paused: the release must not be reported before the VM resumes.
        dom = self.vm.domain
        dom.suspend()
        self.guest.mark()
        outcome: dict[str, Any] = {}

        def release() -> None:
            try:
                done = client.release_pod("pod-a-uid", "rel-a", LIBVIRT_TIMEOUT_S + PAUSE_S)
                outcome["released"], outcome["quarantined"] = list(done.released), list(done.quarantined)
            except HostCallError as e:
                outcome["error"] = f"{e.code}: {e}"
            outcome["done_at"] = time.monotonic()

        t0 = time.monotonic()
        worker = threading.Thread(target=release, name="paused-release")
        worker.start()
        worker.join(PAUSE_S)
        self.rec.put("paused.pending_while_paused", worker.is_alive())
        self.rec.put("paused.aliases_while_paused", self.live_aliases())
        self.rec.put("paused.driver_while_paused", self.sysfs.driver(vf_a.pci))
        resumed_at = time.monotonic()
        dom.resume()
        worker.join(LIBVIRT_TIMEOUT_S + PAUSE_S)
        self.rec.put("paused.release", {k: v for k, v in outcome.items() if k != "done_at"})
        self.rec.time("paused.paused_for", resumed_at - t0)
        if "done_at" in outcome:
            self.rec.time("paused.done_after_resume", outcome["done_at"] - resumed_at)
        self.rec.put("paused.aliases_after", self.live_aliases())
        self.rec.put("paused.driver_after", self.sysfs.driver(vf_a.pci))
        _, seen = self.guest.wait("del", lambda e: e.bdf == event.bdf, "PCI-DEL of pod A's VF")
        self.rec.time("paused.guest_del_after_resume", seen)
        self.rec.put("service.released_view", self.pf_view(vf_a))
        self.rec.put("service.leases_after_release", [
            {"pod_uid": le.pod_uid, "state": le.state} for le in client.list_leases()
        ])  # fmt: skip

    def error_codes(self) -> None:
        pf_pci = self.vfs[0].pf_pci
        plain = VfSettings(mac="52:54:00:d0:00:04")
        missing = VfRef(self.pf, pf_pci, 99, PciAddress.parse("0000:3b:10.0"))
        self.rec.put("error.missing_device", failure_of(
            lambda: self.hostdev_hp.attach(L2, missing, lease_alias("labd-missing"), plain, LIBVIRT_TIMEOUT_S)))  # fmt: skip
        non_vf_pci = self.sysfs.find(NON_VF_IDS)
        if non_vf_pci is None:
            raise LookupError(f"L1 has no {NON_VF_IDS} NIC; run.py should give it one")
        non_vf = VfRef(self.pf, pf_pci, 98, non_vf_pci)
        self.rec.put("error.not_a_vf_driver_before", self.sysfs.driver(non_vf_pci))
        self.rec.put("error.not_a_vf", failure_of(
            lambda: self.ifhd.attach(L2, non_vf, lease_alias("labd-notvf"), plain, LIBVIRT_TIMEOUT_S)))  # fmt: skip
        self.rec.put("error.not_a_vf_driver_after", self.sysfs.driver(non_vf_pci))
        # Our adapter never detaches what the live XML lacks, so libvirt's own answer is asked for directly.
        vf = self.vfs[1]
        xml = device_xml(HotplugMode.HOSTDEV, vf_pci=vf.pci, alias=lease_alias("labd-never"), settings=plain,
                         port_index=1)  # fmt: skip
        conn = libvirt.open(URI)
        try:
            conn.lookupByName(L2).detachDeviceFlags(xml, libvirt.VIR_DOMAIN_AFFECT_LIVE)
            self.rec.put("error.never_attached", {"raised": None, "libvirt_code": None, "message": ""})
        except libvirt.libvirtError as e:
            err = translate(LibvirtFailure.of(e), action=f"detach of VF {vf.pci}", vm=L2, uri=URI)
            self.rec.put("error.never_attached", {"raised": type(err).__name__, "libvirt_code": e.get_error_code(),
                                                  "message": str(err)})  # fmt: skip
        finally:
            conn.close()
        self.rec.put("error.aliases_after", self.live_aliases())

    def finish(self) -> None:
        self.rec.put("final.vfs", [{"pci": str(v.pci), "driver": self.sysfs.driver(v.pci)} for v in self.vfs])
        self.rec.put("final.views", [self.pf_view(v) for v in self.vfs])
        self.rec.put("l2.console_tail", self.vm.console().splitlines()[-40:])
        if self.svc is not None:
            self.svc.stop()  # already stopped unless the service step was skipped or failed early
            if self.svc.log.exists():
                shutil.copy(self.svc.log, self.work / "host.log")
        self.vm.destroy()
        self.ifhd.close()
        self.hostdev_hp.close()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--pf", required=True, help="the igb PF's netdev")
    parser.add_argument("--result", type=Path, required=True, help="JSON file to write")
    parser.add_argument("--work", type=Path, required=True, help="scratch directory (L2 console log)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    args.work.mkdir(parents=True, exist_ok=True)
    rec = Recorder(args.result)
    check = Check(args.pf, rec, args.work)
    # The guest steps need the inner guest; the others run whatever failed before them.
    needs_guest = {"interface_hostdev", "hostdev", "interface_hostdev_release", "service", "error_codes"}
    steps: list[tuple[str, Callable[[], None]]] = [
        ("discover", check.discover),
        ("netlink", check.netlink),
        ("start_service", check.start_service),
        ("boot_l2", check.boot_l2),
        # hostdev goes in while the interface-hostdev VF is still plugged, so each attach gets a root port
        # of its own: re-plugging a port the nested guest has just emptied sometimes never shows up in it.
        ("interface_hostdev", check.interface_hostdev),
        ("hostdev", check.hostdev),
        ("interface_hostdev_release", check.interface_hostdev_release),
        ("service", check.service),
        ("error_codes", check.error_codes),
        ("finish", check.finish),
    ]
    for name, fn in steps:
        if name in needs_guest and not rec.data["steps"]["boot_l2"]["ok"]:
            continue
        with rec.step(name):
            fn()


if __name__ == "__main__":
    main()
