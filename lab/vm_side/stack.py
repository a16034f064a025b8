"""The whole stack of the lab's VM side: vfhotplug-host on this machine, the lab guest, containerd and vfhotplug-nri in it.

with LabStack() as stack:
    view = stack.pods.run("p1", demand(2, "kernel"))
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lab.vm_side.emulated_host import LabHostService
from lab.vm_side.lab import DOMAIN, Lab
from lab.vm_side.phased import Phased, Progress, no_progress
from lab.vm_side.plugin import GuestPlugin
from lab.vm_side.pods import LabPods
from lab.vm_side.vm import LAB_DIR, PrivateLibvirtd


class LabStack(Phased):
    def __init__(self, folder: Path = LAB_DIR, *, vfs: int = 8, progress: Progress = no_progress) -> None:
        super().__init__(progress)
        self.vfs = vfs
        self.service = LabHostService(
            folder / "host", domain=DOMAIN, uri=PrivateLibvirtd(folder / "libvirt").uri, vfs=vfs
        )
        # The guest's service channel is fixed at boot, so the service's port is chosen first.
        self.lab = Lab(folder, service_target=self.service.target, progress=progress)
        self._plugin: GuestPlugin | None = None
        self.baseline: dict[str, dict[str, Any]] = {}  # the guest's PCI devices before any pod

    @property
    def plugin(self) -> GuestPlugin:
        if self._plugin is None:
            raise RuntimeError("the lab stack is not up; call up() first")
        return self._plugin

    @property
    def pods(self) -> LabPods:
        return LabPods(self.lab, self.service)

    def up(self) -> None:
        creds = self._phase(
            "service_prepare",
            f"preparing the host service (lab PKI, emulated PF with {self.vfs} VFs)",
            self.service.prepare,
        )
        self.lab.up()
        self.phases.update(self.lab.phases)
        self.baseline = self.lab.guest_pci()
        self._phase(
            "service", "starting vfhotplug-host (gRPC + mTLS, emulated-nic backend)", self.service.start
        )
        self._plugin = GuestPlugin(self.lab.agent, self.lab.nri_socket, creds)
        self._phase("plugin", "starting vfhotplug-nri in the guest (external NRI plugin)", self._plugin.start)

    def down(self) -> None:
        self._progress("tearing down (host service, guest, the lab's libvirtd)")
        try:
            self.service.stop()
        finally:
            self.lab.down()
