"""The CDI spec builder and its validator (pure)."""

from dataclasses import replace

import pytest

from tests.pod.test_adjustment import REC, vf
from vm_side.adjustment import build_adjustment
from vm_side.cdi_spec import (
    KIND,
    CdiDevice,
    CdiEdits,
    CdiSpec,
    CdiSpecError,
    build_cdi_spec,
    cdi_device_names,
    required_version,
    spec_to_json,
    validate,
)
from vm_side.demand import Mode
from vm_side.runtime_model import Device, Mount


def spec_of(rec=REC) -> CdiSpec:
    return build_cdi_spec(rec, build_adjustment(rec))


def test_one_device_per_dpdk_vf_with_its_group_node():
    spec = spec_of()
    assert spec.kind == "vfhotplug.io/vf"
    # net3 is a kernel VF: it has no node to inject, so it is no CDI device.
    assert [d.name for d in spec.devices] == ["u1-net1", "u1-net2"]
    assert all(
        d.edits == CdiEdits(devices=(Device("/dev/vfio/16", 511, 16, file_mode=0o666),)) for d in spec.devices
    )
    assert spec.qualified_names() == ("vfhotplug.io/vf=u1-net1", "vfhotplug.io/vf=u1-net2")
    assert cdi_device_names(REC) == spec.qualified_names()


def test_pod_wide_edits_at_spec_level():
    spec, inline = spec_of(), build_adjustment(REC)
    assert spec.edits.devices == (Device("/dev/vfio/vfio", 10, 196, file_mode=0o666),)
    assert dict(spec.edits.env) == dict(inline.env)
    assert spec.edits.mounts == inline.mounts


def test_json_uses_cdi_field_names():
    doc = spec_to_json(spec_of())
    assert doc["cdiVersion"] == "0.4.0"  # mounts carry a type; the uid starts with a letter
    assert doc["kind"] == KIND
    dev = doc["devices"][0]  # type: ignore[index]
    assert dev == {
        "name": "u1-net1",
        "containerEdits": {
            "deviceNodes": [
                {"path": "/dev/vfio/16", "type": "c", "major": 511, "minor": 16, "fileMode": 0o666}
            ]
        },
    }
    edits = doc["containerEdits"]
    assert "VFHOTPLUG_COUNT=3" in edits["env"]  # type: ignore[index]
    assert edits["mounts"][0] == {  # type: ignore[index]
        "hostPath": "/run/vfhotplug/pods/u1/devinfo",
        "containerPath": "/var/run/k8s.cni.cncf.io/devinfo/dp",
        "type": "bind",
        "options": ["rbind", "ro"],
    }


def test_version_is_the_lowest_the_features_need():
    # A Kubernetes pod uid often starts with a digit: that needs 0.5.0 (still read by podman 4.3).
    assert spec_of(replace(REC, pod_uid="7c0e-41")).version == "0.5.0"
    plain = CdiSpec("0.3.0", KIND, (CdiDevice("a", CdiEdits(env=(("A", "1"),))),))
    assert required_version(plain) == "0.3.0"
    validate(plain)
    assert required_version(replace(plain, kind="vfhotplug.io/v.f")) == "0.6.0"


def test_pod_without_dpdk_vf_gets_no_spec():
    kernel_only = replace(REC, vfs=(vf(2, "mgmt", Mode.KERNEL),), vfio_container_dev=None, steps=())
    assert cdi_device_names(kernel_only) == ()
    with pytest.raises(CdiSpecError, match="no dpdk-mode VF"):
        spec_of(kernel_only)


def test_bad_ifname_makes_no_device_name():
    bad = vf(0, "fast", Mode.DPDK, "16")
    bad = replace(bad, slot=replace(bad.slot, ifname="dp-"))
    with pytest.raises(CdiSpecError, match="device name 'u1-dp-'"):
        spec_of(replace(REC, vfs=(bad,)))


GOOD = CdiSpec(
    "0.4.0",
    KIND,
    (CdiDevice("p1-net1", CdiEdits(devices=(Device("/dev/vfio/3", 511, 3),))),),
    CdiEdits(env=(("A", "1"),), mounts=(Mount("/x", "/y"),)),
)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        (replace(GOOD, version="0.2.9"), "not a released CDI version"),
        (replace(GOOD, version="0.3.0"), "too old .* needs 0.4.0"),
        (replace(GOOD, kind="vf"), "vendor before '/' must be a DNS subdomain"),
        (replace(GOOD, kind="Vfhotplug.io/vf"), "DNS subdomain"),
        (replace(GOOD, kind="vfhotplug.io/vf/x"), "class after '/'"),
        (replace(GOOD, kind="vfhotplug.io/vf-"), "class after '/'"),
        (replace(GOOD, kind="9fh.io/vf"), "start with a letter"),
        (replace(GOOD, devices=()), "at least one device"),
        (replace(GOOD, devices=(*GOOD.devices, *GOOD.devices)), "appears twice"),
        (replace(GOOD, devices=(CdiDevice("-a", GOOD.devices[0].edits),)), "device name '-a'"),
        (replace(GOOD, devices=(CdiDevice("a b", GOOD.devices[0].edits),)), "device name 'a b'"),
        (replace(GOOD, devices=(CdiDevice("a", CdiEdits()),)), "has no edits"),
        (replace(GOOD, edits=CdiEdits(devices=(Device("dev/vfio/vfio", 10, 196),))), "not absolute"),
        (replace(GOOD, edits=CdiEdits(devices=(Device("/dev/x", 1, 3, type="x"),))), "type 'x'"),
        (replace(GOOD, edits=CdiEdits(devices=(Device("/dev/x", 0, 3),))), "no major number"),
        (replace(GOOD, edits=CdiEdits(mounts=(Mount("relative", "/y"),))), "containerPath 'relative'"),
        (replace(GOOD, edits=CdiEdits(mounts=(Mount("/x", "y"),))), "hostPath 'y'"),
        (replace(GOOD, edits=CdiEdits(env=(("", "1"),))), "env name ''"),
    ],
)
def test_validator_rejects(spec: CdiSpec, message: str) -> None:
    validate(GOOD)
    with pytest.raises(CdiSpecError, match=message):
        validate(spec)
