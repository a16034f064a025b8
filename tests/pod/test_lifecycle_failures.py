"""PodLifecycle when a pod start fails: bad demand, the host refusing, down, dropping the connection or
slow, the deadline near, a VF that never shows up, a failing datapath step; nothing may be left behind."""

import time

import pytest

from contract.errors import ErrorKind
from contract.host_api import HostCallError
from tests.pod.conftest import Guest, needs_root
from tests.pod.lifecycle_checks import RecordingStep, assert_clean, soon
from vm_side.demand import ANNOTATION
from vm_side.lifecycle import PodError

pytestmark = needs_root


@pytest.mark.parametrize(
    ("annotation", "field"),
    [
        ('[{"count": 0}]', "'count'"),
        ('[{"mode": "x"}]', "'mode'"),
        ('[{"vlan": 9999}]', "'vlan'"),
        ("9", "limit"),
    ],
)
def test_bad_demand_fails_without_host_call(guest: Guest, annotation, field):
    with pytest.raises(PodError, match=field) as err:
        guest.lifecycle().prepare("u3", "pod-3", "/x", {ANNOTATION: annotation}, soon())
    assert "pod pod-3 (u3): bad demand" in str(err.value)
    assert guest.host.calls == []


def test_vpp_mode_needs_its_datapath_step(guest: Guest):
    with pytest.raises(PodError, match="no VPP is configured"):
        guest.lifecycle().prepare("u4", "pod-4", "", {ANNOTATION: '[{"mode": "vpp"}]'}, soon())
    assert guest.host.calls == []


def test_pool_exhausted(guest: Guest, make_netns):
    with pytest.raises(PodError, match="RESOURCE_EXHAUSTED"):
        guest.lifecycle().prepare(
            "u5", "pod-5", make_netns(), {ANNOTATION: '[{"pool": "fast", "count": 3}]'}, soon()
        )
    assert_clean(guest)


def test_host_down(guest: Guest, make_netns):
    guest.host.up = False
    with pytest.raises(PodError, match=r"pod pod-6 \(u6\): host attach: .*UNAVAILABLE"):
        guest.lifecycle().prepare("u6", "pod-6", make_netns(), {ANNOTATION: "1"}, soon())
    guest.host.up = True
    guest.lifecycle().worker.run_once()
    assert_clean(guest)


def test_a_dropped_connection_is_retried_with_the_same_request_id(guest: Guest, make_netns):
    real_attach = guest.host.attach
    seen: list[str] = []

    def flaky_attach(pod_uid, pod_name, requests, request_id, timeout_s):
        seen.append(request_id)
        if len(seen) == 1:
            raise HostCallError(ErrorKind.UNAVAILABLE, "Stream removed (Socket closed)")
        return real_attach(pod_uid, pod_name, requests, request_id, timeout_s)

    guest.host.attach = flaky_attach  # type: ignore[method-assign]
    rec = guest.lifecycle().prepare("u6b", "pod-6b", make_netns(), {ANNOTATION: "1"}, soon())
    assert rec is not None and len(rec.vfs) == 1
    assert len(seen) == 2 and seen[0] == seen[1]


def test_a_refusal_for_rate_is_retried_after_the_hosts_hint(guest: Guest, make_netns):
    real_attach = guest.host.attach
    at: list[float] = []

    def limited_attach(pod_uid, pod_name, requests, request_id, timeout_s):
        at.append(time.monotonic())
        if len(at) == 1:
            raise HostCallError(ErrorKind.RESOURCE_EXHAUSTED, "over its request rate", retry_after_s=0.3)
        return real_attach(pod_uid, pod_name, requests, request_id, timeout_s)

    guest.host.attach = limited_attach  # type: ignore[method-assign]
    rec = guest.lifecycle().prepare("u6c", "pod-6c", make_netns(), {ANNOTATION: "1"}, soon())
    assert rec is not None and len(rec.vfs) == 1
    assert len(at) == 2 and at[1] - at[0] >= 0.3  # waited the hint, not the 0.1 s reconnect pause


def test_host_slow_past_the_deadline(guest: Guest, make_netns):
    guest.host.attach_delay_s = 5.0
    start = time.monotonic()
    lc = guest.lifecycle()
    with pytest.raises(PodError, match="DEADLINE_EXCEEDED"):
        lc.prepare("u7", "pod-7", make_netns(), {ANNOTATION: "2"}, start + 1.0)
    # The host call got the deadline minus the rollback margin, not the runtime's whole budget.
    assert guest.host.attach_timeouts[0] <= 1.0 - guest.config.margin_s
    assert lc.wait_background(10)  # too late to undo inside the call: undone right after
    assert_clean(guest)


def test_deadline_already_near_aborts_before_the_host(guest: Guest, make_netns):
    lc = guest.lifecycle()
    with pytest.raises(PodError, match="rollback margin"):
        lc.prepare("u8", "pod-8", make_netns(), {ANNOTATION: "1"}, time.monotonic() + 0.1)
    assert "attach" not in guest.host.calls
    assert lc.wait_background(10)
    assert_clean(guest)


def test_netdev_never_appears(guest: Guest, make_netns):
    real_attach = guest.backend.attach

    def attach_without_netdev(*args, **kw):
        dev = real_attach(*args, **kw)
        # The VF shows up on the bus but its driver never makes a netdev.
        for net in (guest.sysfs.root / "bus/pci/devices" / str(dev.guest_pci) / "net").iterdir():
            (net / "address").unlink()
            net.rmdir()
        return dev

    guest.backend.attach = attach_without_netdev  # type: ignore[method-assign]
    pod = make_netns()
    lc = guest.lifecycle()
    with pytest.raises(PodError, match=r"PCI 0000:10:00.0 MAC 02:fe:.*: PCI device present, no netdev yet"):
        lc.prepare("u9", "pod-9", pod, {ANNOTATION: "1"}, soon(1.0))
    assert lc.wait_background(10)
    assert_clean(guest, pod)


def test_failing_step_rolls_back_everything(guest: Guest, make_netns):
    step = RecordingStep(fail=True)
    pod = make_netns()
    with pytest.raises(PodError, match="recording: datapath refused; rolled back"):
        guest.lifecycle(steps=[step]).prepare("u11", "pod-11", pod, {ANNOTATION: "2"}, soon())
    assert_clean(guest, pod)
