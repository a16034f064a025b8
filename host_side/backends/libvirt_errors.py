"""The one place libvirt errors become host-side errors: by error code (and domain), with what to do next.

Codes are the ones libvirt 9.0 really returns for these calls (shared notes "libvirt-qemu-lab" §7).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import libvirt

from contract.errors import (
    BackendUnavailable,
    DeadlineExceeded,
    HostSideError,
    NotFound,
    PreconditionFailed,
)

log = logging.getLogger(__name__)

# Errors raised by the client's RPC layer mean the daemon is gone or the socket broke, whatever the code
# (1 "client socket is closed", 38 "Failed to connect socket").
_TRANSPORT_DOMAINS = frozenset({libvirt.VIR_FROM_RPC, libvirt.VIR_FROM_REMOTE})
_CONNECTION_CODES = frozenset({libvirt.VIR_ERR_NO_CONNECT, libvirt.VIR_ERR_INVALID_CONN, libvirt.VIR_ERR_RPC})


@dataclass(frozen=True)
class LibvirtFailure:
    """What a libvirtError says: code, error domain (which libvirt part raised it) and message."""

    code: int
    domain: int
    message: str

    @classmethod
    def of(cls, err: libvirt.libvirtError) -> LibvirtFailure:
        return cls(
            code=err.get_error_code() or 0,
            domain=err.get_error_domain() or 0,
            message=err.get_error_message() or str(err),
        )


def _log_libvirt_error(_ctx: object, err: tuple[object, ...]) -> None:
    log.debug("libvirt reported: %s", err)


def route_libvirt_errors_to_logging() -> None:
    """libvirt prints every error to stderr by default; ours are translated and logged where they happen."""
    libvirt.registerErrorHandler(_log_libvirt_error, None)


def translate(failure: LibvirtFailure, *, action: str, vm: str | None, uri: str) -> HostSideError:
    """The host-side error for a failed libvirt call; `action` names the call and device, e.g.
    "attach of VF 0000:3b:10.0 (ua-vfhp-l1)"; `vm` is None for calls before a domain is known."""
    on_vm = f" on VM {vm}" if vm else ""
    what = f"{action}{on_vm}: libvirt error {failure.code}: {failure.message}"
    code = failure.code
    if failure.domain in _TRANSPORT_DOMAINS or code in _CONNECTION_CODES:
        return BackendUnavailable(f"{what}; libvirtd at {uri} cannot be reached: start libvirtd, then retry")
    if code == libvirt.VIR_ERR_NO_DOMAIN:
        return PreconditionFailed(f"{what}; no such libvirt domain: check the VM's domain name in the config")
    if code == libvirt.VIR_ERR_OPERATION_INVALID:
        # Domain not running, or the VF is in use by another domain / not detached from its host driver.
        return PreconditionFailed(f"{what}; start the VM, or free the VF from whoever holds it, then retry")
    if code == libvirt.VIR_ERR_CONFIG_UNSUPPORTED:
        return PreconditionFailed(
            f"{what}; this host cannot pass PCI devices through: enable the IOMMU (intel_iommu=on or "
            "amd_iommu=on) and VFIO, or use a VF (interface-hostdev works on SR-IOV VFs only)"
        )
    if code == libvirt.VIR_ERR_SYSTEM_ERROR:
        return PreconditionFailed(f"{what}; check that the VF still exists in sysfs and rescan the inventory")
    if code == libvirt.VIR_ERR_DEVICE_MISSING:
        return NotFound(f"{what}; the device is not in the VM: reconcile the lease with the live domain XML")
    if code in (libvirt.VIR_ERR_NO_SUPPORT, libvirt.VIR_ERR_OPERATION_UNSUPPORTED):
        return PreconditionFailed(f"{what}; the libvirt driver at {uri} cannot hot-plug: use qemu:///system")
    if code == libvirt.VIR_ERR_OPERATION_TIMEOUT:
        return DeadlineExceeded(f"{what}; libvirt timed out: the VM's monitor is busy, retry later")
    # Anything else (27 XML error, 1 internal error from QEMU) is our bug or libvirt's: keep the message.
    return HostSideError(f"{what}; report this with the VM's libvirt log")
