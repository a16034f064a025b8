"""libvirt's real error codes on real devices, as our adapter translates them: a VF that does not exist,
a NIC that is not a VF, and a detach of what was never attached."""

from __future__ import annotations

import libvirt

from contract.pci import PciAddress
from host_side.backends.base import VfRef, VfSettings, lease_alias
from host_side.backends.libvirt_errors import LibvirtFailure, translate
from host_side.backends.libvirt_xml import HotplugMode, device_xml
from lab.sriov.l1 import L1, L2, LIBVIRT_TIMEOUT_S, NON_VF_IDS, URI
from lab.sriov.oracles import failure_of


def error_codes(l1: L1) -> None:
    rec, pf_pci = l1.rec, l1.vfs[0].pf_pci
    plain = VfSettings(mac="52:54:00:d0:00:04")
    missing = VfRef(l1.pf, pf_pci, 99, PciAddress.parse("0000:3b:10.0"))
    rec.put("error.missing_device", failure_of(
        lambda: l1.hostdev.attach(L2, missing, lease_alias("labd-missing"), plain, LIBVIRT_TIMEOUT_S)))  # fmt: skip
    non_vf_pci = l1.sysfs.find(NON_VF_IDS)
    if non_vf_pci is None:
        raise LookupError(f"L1 has no {NON_VF_IDS} NIC; run.py should give it one")
    non_vf = VfRef(l1.pf, pf_pci, 98, non_vf_pci)
    rec.put("error.not_a_vf_driver_before", l1.sysfs.driver(non_vf_pci))
    rec.put("error.not_a_vf", failure_of(
        lambda: l1.ifhd.attach(L2, non_vf, lease_alias("labd-notvf"), plain, LIBVIRT_TIMEOUT_S)))  # fmt: skip
    rec.put("error.not_a_vf_driver_after", l1.sysfs.driver(non_vf_pci))
    rec.put("error.never_attached", _detach_never_attached(l1.vfs[1], plain))
    rec.put("error.aliases_after", l1.live_aliases())


def _detach_never_attached(vf: VfRef, plain: VfSettings) -> dict[str, object]:
    """Our adapter never detaches what the live XML lacks, so libvirt's own answer is asked for directly."""
    xml = device_xml(HotplugMode.HOSTDEV, vf_pci=vf.pci, alias=lease_alias("labd-never"), settings=plain,
                     port_index=1)  # fmt: skip
    conn = libvirt.open(URI)
    try:
        conn.lookupByName(L2).detachDeviceFlags(xml, libvirt.VIR_DOMAIN_AFFECT_LIVE)
        return {"raised": None, "libvirt_code": None, "message": ""}
    except libvirt.libvirtError as e:
        err = translate(LibvirtFailure.of(e), action=f"detach of VF {vf.pci}", vm=L2, uri=URI)
        return {"raised": type(err).__name__, "libvirt_code": e.get_error_code(), "message": str(err)}
    finally:
        conn.close()
