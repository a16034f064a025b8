"""The lab's VM side as one object: private libvirtd, root export, guest, agent, containerd in the guest.

    with Lab() as lab:          # boots; lab.phases holds the seconds each start-up phase took
        lab.agent.call("pci")
        lab.hotplug.attach(lab.domain, ...)

Everything lives under build/lab (console log, agent socket, libvirtd state); `make testbed-lab` builds the
guest pieces first.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from host_side.backends.libvirt_errors import route_libvirt_errors_to_logging
from host_side.backends.libvirt_hotplug import LibvirtHotplug
from lab.vm_side.agent_client import GuestAgent
from lab.vm_side.phased import Phased, Progress, no_progress
from lab.vm_side.vm import LAB_DIR, LabVm, LabVmSpec, PrivateLibvirtd

log = logging.getLogger(__name__)
T = TypeVar("T")

DOMAIN = "vfhp-lab-c"


class Lab(Phased):
    """Boots the lab guest on `__enter__` (or `up()`), tears it down on `__exit__` (or `down()`)."""

    def __init__(
        self,
        folder: Path = LAB_DIR,
        *,
        root_ports: int = 4,
        service_target: str = "TCP:127.0.0.1:50151",
        nri_request_timeout: str = "30s",
        progress: Progress = no_progress,
    ) -> None:
        super().__init__(progress)
        self.folder = folder.resolve()
        self.libvirtd = PrivateLibvirtd(self.folder / "libvirt")
        run = self.folder / "run"
        self.spec = LabVmSpec(
            name=DOMAIN,
            console_log=run / "console.log",
            agent_socket=run / "agent.sock",
            root_export=self.folder / "rootfs",
            service_target=service_target,
            root_ports=root_ports,
        )
        self._nri_request_timeout = nri_request_timeout
        self.vm: LabVm | None = None
        self._agent: GuestAgent | None = None
        self._hotplug: LibvirtHotplug | None = None
        self.nri_socket = ""

    @property
    def domain(self) -> str:
        return self.spec.name

    @property
    def uri(self) -> str:
        return self.libvirtd.uri

    @property
    def agent(self) -> GuestAgent:
        if self._agent is None:
            raise RuntimeError("the lab is not up; call up() first")
        return self._agent

    @property
    def hotplug(self) -> LibvirtHotplug:
        """The project's libvirt hot-plug adapter in emulated-nic mode, on the lab's libvirtd."""
        if self._hotplug is None:
            self._hotplug = LibvirtHotplug(self.uri, mode="emulated-nic")
        return self._hotplug

    def up(self) -> None:
        route_libvirt_errors_to_logging()
        (self.folder / "run").mkdir(parents=True, exist_ok=True)
        self._phase("libvirtd", "starting the lab's libvirtd", self.libvirtd.start)
        self._phase(
            "export", "exporting / read-only", lambda: self.libvirtd.export_root(self.spec.root_export)
        )
        self.vm = LabVm(self.spec, self.uri)
        self._phase("boot", "booting the guest (q35, TCG, intel-iommu)", self.vm.start)
        self._agent = self._phase(
            "agent", "connecting to the guest agent", lambda: GuestAgent(self.spec.agent_socket)
        )
        started: dict[str, Any] = self._phase(
            "containerd",
            "starting containerd in the guest",
            lambda: self.agent.call(
                "containerd_start", timeout_s=120, nri_request_timeout=self._nri_request_timeout
            ),
        )
        self.nri_socket = str(started["nri_socket"])

    def down(self) -> None:
        """Destroys the guest and stops the private libvirtd; safe after a partial up()."""
        if self._hotplug is not None:
            self._hotplug.close()
            self._hotplug = None
        if self._agent is not None:
            self._agent.close()
            self._agent = None
        if self.vm is not None:
            self.vm.destroy()
            self.vm = None
        self.libvirtd.stop()

    def guest_pci(self) -> dict[str, dict[str, Any]]:
        """The guest's PCI devices by address (the agent reads the guest's sysfs)."""
        return {dev["bdf"]: dev for dev in self.agent.call("pci")}

    def wait_guest(self, what: str, check: Callable[[], T | None], timeout_s: float = 30.0) -> T:
        """Polls `check` (a guest query) until it returns something other than None."""
        deadline = time.monotonic() + timeout_s
        while (result := check()) is None:
            if time.monotonic() > deadline:
                raise TimeoutError(f"lab guest: {what} did not happen within {timeout_s} s")
            time.sleep(0.1)
        return result
