"""libvirt errors (real codes and error domains of libvirt 9.0) become the right host-side errors."""

from __future__ import annotations

import libvirt
import pytest

from contract.errors import (
    BackendUnavailable,
    ConfigError,
    DeadlineExceeded,
    HostSideError,
    NotFound,
    PreconditionFailed,
)
from host_side.backends.libvirt_errors import LibvirtFailure, translate
from host_side.backends.libvirt_hotplug import LibvirtHotplug


def _libvirt_error(code: int, domain: int, message: str) -> libvirt.libvirtError:
    """A libvirtError as libvirt-python raises it: `err` is virGetLastError()'s 9-tuple."""
    err = libvirt.libvirtError(message)
    err.err = (code, domain, message, libvirt.VIR_ERR_ERROR, message, None, None, -1, -1)
    return err


# (code, error domain, message seen on this machine or in the lab notes, class, hint in our message)
CASES = [
    (
        libvirt.VIR_ERR_SYSTEM_ERROR,
        libvirt.VIR_FROM_RPC,
        "Failed to connect socket to '/var/run/libvirt/libvirt-sock': No such file or directory",
        BackendUnavailable,
        "start libvirtd",
    ),
    (
        libvirt.VIR_ERR_INTERNAL_ERROR,
        libvirt.VIR_FROM_RPC,
        "internal error: client socket is closed",
        BackendUnavailable,
        "start libvirtd",
    ),
    (
        libvirt.VIR_ERR_SYSTEM_ERROR,
        libvirt.VIR_FROM_NODEDEV,
        "Device 0000:3b:10.0 not found: could not access /sys/bus/pci/devices/0000:3b:10.0/config",
        PreconditionFailed,
        "rescan the inventory",
    ),
    (
        libvirt.VIR_ERR_OPERATION_INVALID,
        libvirt.VIR_FROM_QEMU,
        "PCI device 0000:01:10.0 is in use by driver QEMU, domain l2",
        PreconditionFailed,
        "free the VF",
    ),
    (
        libvirt.VIR_ERR_CONFIG_UNSUPPORTED,
        libvirt.VIR_FROM_QEMU,
        "unsupported configuration: host doesn't support passthrough of host PCI devices",
        PreconditionFailed,
        "enable the IOMMU",
    ),
    (
        libvirt.VIR_ERR_DEVICE_MISSING,
        libvirt.VIR_FROM_QEMU,
        "host pci device 0000:3b:10.0 not found",
        NotFound,
        "reconcile",
    ),
    (
        libvirt.VIR_ERR_NO_SUPPORT,
        libvirt.VIR_FROM_NONE,
        "this function is not supported by the connection driver: virDomainAttachDeviceFlags",
        PreconditionFailed,
        "qemu:///system",
    ),
    (
        libvirt.VIR_ERR_NO_DOMAIN,
        libvirt.VIR_FROM_QEMU,
        "Domain not found: no domain with matching name 'vm9'",
        PreconditionFailed,
        "domain name in the config",
    ),
    (
        libvirt.VIR_ERR_OPERATION_TIMEOUT,
        libvirt.VIR_FROM_QEMU,
        "Timed out during operation: cannot acquire state change lock",
        DeadlineExceeded,
        "retry later",
    ),
    (
        libvirt.VIR_ERR_XML_ERROR,
        libvirt.VIR_FROM_DOMAIN,
        "XML error: Invalid PCI address bus='0x1ff', must be <= 0xFF",
        HostSideError,
        "report this",
    ),
]


@pytest.mark.parametrize(
    ("code", "domain", "message", "cls", "hint"), CASES, ids=[f"{c[0]}-{c[1]}" for c in CASES]
)
def test_translate_by_code(code: int, domain: int, message: str, cls: type[HostSideError], hint: str) -> None:
    err = translate(
        LibvirtFailure.of(_libvirt_error(code, domain, message)),
        action="attach of VF 0000:3b:10.0 (ua-vfhp-l1)",
        vm="vm1",
        uri="qemu:///system",
    )
    assert type(err) is cls
    text = str(err)
    assert text.startswith(f"attach of VF 0000:3b:10.0 (ua-vfhp-l1) on VM vm1: libvirt error {code}: ")
    assert message in text
    assert hint in text


def test_failure_of_an_error_without_details_keeps_the_default_message() -> None:
    err = libvirt.libvirtError("virDomainAttachDeviceFlags() failed")
    err.err = None
    failure = LibvirtFailure.of(err)
    assert failure == LibvirtFailure(code=0, domain=0, message="virDomainAttachDeviceFlags() failed")
    assert type(translate(failure, action="attach", vm=None, uri="qemu:///system")) is HostSideError


def test_unknown_mode_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="use one of: interface-hostdev, hostdev, emulated-nic"):
        LibvirtHotplug("qemu:///system", mode="vfio")
    with pytest.raises(ConfigError, match="e1000e, virtio"):
        LibvirtHotplug("qemu:///system", mode="emulated-nic", nic_model="rtl8139")
