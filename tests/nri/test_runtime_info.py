"""RuntimeInfo: what a runtime's Configure tells about its NRI version and timeouts."""

from __future__ import annotations

import pytest

from vm_side.runtime_model import runtime_info, supports_cdi_devices


@pytest.mark.parametrize(
    ("name", "version", "sent", "timeouts", "expected", "basis"),
    [
        ("containerd", "1.7.24~ds1", "", 0, (0, 6, 1), "runtime version"),
        ("containerd", "2.1.9~ds1", "", 2000, (0, 8, 0), "runtime version"),
        ("containerd", "v2.2.1", "", 2000, (0, 11, 0), "runtime version"),
        ("cri-o", "1.34.2", "", 2000, (0, 10, 0), "runtime version"),
        ("some-runtime", "3.0", "", 2000, (0, 8, 0), "timeouts"),  # only v0.8+ send timeouts
        ("containerd", "1.7.24~ds1", "", 2000, (0, 8, 0), "timeouts"),  # the fields outrank the table
        ("containerd", "v2.3.0", "v0.12.1-0.20260101000000-0123456789ab", 2000, (0, 12, 1), "sent"),
        ("containerd", "v2.3.0", "0.0.0-unknown", 2000, (0, 12, 0), "sent"),  # only v0.12+ send it
        ("", "", "", 0, (0, 6, 1), "assumed"),
    ],
    # ids without the word "containerd": `-k "not containerd"` deselects the real-containerd tests
    ids=[
        "cd1.7.24",
        "cd2.1",
        "cd2.2.1",
        "crio1.34",
        "unknown+timeouts",
        "cd1.7+timeouts",
        "sent",
        "sent-unknown",
        "nothing",
    ],
)
def test_runtime_info_knows_the_nri_version(name, version, sent, timeouts, expected, basis) -> None:
    info = runtime_info(name, version, nri_version=sent, request_timeout_ms=timeouts)
    assert (info.nri_version, info.nri_version_basis) == (expected, basis)
    assert supports_cdi_devices(info) is (expected >= (0, 8, 0))


def test_runtime_info_timeouts_default_to_the_v061_runtime_defaults() -> None:
    old = runtime_info("containerd", "1.7.24~ds1")
    assert (old.registration_timeout_s, old.request_timeout_s, old.timeouts_sent) == (5.0, 2.0, False)
    new = runtime_info("containerd", "2.1.9", registration_timeout_ms=1500, request_timeout_ms=250)
    assert (new.registration_timeout_s, new.request_timeout_s, new.timeouts_sent) == (1.5, 0.25, True)
