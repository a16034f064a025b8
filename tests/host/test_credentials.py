"""Credentials that change, over the real mTLS server with real, short-lived certificates from pki.py."""

from __future__ import annotations

import datetime
import logging
import os
import shutil
import signal
import socket
import ssl
import time
from dataclasses import replace
from pathlib import Path

import grpc
import pytest
from cryptography import x509

from contract.errors import ConfigError, ErrorKind
from contract.host_api import HostCallError
from host_side import pki
from host_side.api import hostplug_pb2 as pb
from host_side.api import hostplug_pb2_grpc as pb_grpc
from host_side.api.client import HostClient
from host_side.config import ListenConfig
from host_side.credentials import load_set
from testbed.waiting import free_port
from tests.host.conftest import Pki, Service, build_sysfs, running_service, write_config
from tests.host.fake_service import launch


@pytest.fixture
def own_pki(tmp_path: Path) -> Pki:
    """A PKI of this test alone (the tests replace its files), with a CRL that revokes only `stranger`."""
    folder = tmp_path / "pki"
    pki.init_ca(folder)
    pki.issue(folder, "host", server=True, sans=["127.0.0.1"])
    for name in ("vm-a", "vm-b", "stranger"):
        pki.issue(folder, name)
    pki.revoke(folder, "stranger")
    return Pki(folder)


def _replace(src: Pki, name: str, dst: Pki, as_name: str) -> None:
    """Puts src's <name> pair in place of dst's <as_name> the way a deploy does: write aside, rename."""
    for ext in ("pem", "key"):
        tmp = dst.folder / f".{as_name}.{ext}.new"
        shutil.copyfile(src.folder / f"{name}.{ext}", tmp)
        os.replace(tmp, dst.folder / f"{as_name}.{ext}")


def _server_cert_serial(svc: Service) -> int:
    """The serial of the certificate the server shows to a new connection (grpc hides the peer's)."""
    ctx = ssl.create_default_context(cafile=str(svc.pki.folder / "ca.pem"))
    ctx.load_cert_chain(*svc.pki.pair("vm-a"))
    ctx.set_alpn_protocols(["h2"])
    with (
        socket.create_connection(("127.0.0.1", svc.port), timeout=5) as raw,
        ctx.wrap_socket(raw, server_hostname="127.0.0.1") as tls,
    ):
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return x509.load_der_x509_certificate(der).serial_number


def _serial(p: Pki, name: str) -> int:
    return x509.load_pem_x509_certificate(p.pair(name)[0].read_bytes()).serial_number


def _eventually(check, timeout_s: float = 10.0):
    end = time.monotonic() + timeout_s
    while True:
        try:
            return check()
        except (AssertionError, HostCallError):
            if time.monotonic() > end:
                raise
            time.sleep(0.1)


def test_a_new_server_certificate_on_disk_is_served_to_new_connections_and_live_ones_go_on(
    own_pki: Pki, tmp_path: Path
):
    with running_service(own_pki, crl=True) as svc, svc.client("vm-a") as live:
        assert live.health().identity == "vm-a"
        before = _server_cert_serial(svc)
        assert before == _serial(own_pki, "host")
        new = Pki(tmp_path / "next")
        new.folder.mkdir()
        for f in ("ca.pem", "ca.key"):
            shutil.copy(own_pki.folder / f, new.folder / f)
        pki.issue(new.folder, "host", server=True, sans=["127.0.0.1"])
        _replace(new, "host", own_pki, "host")
        assert _eventually(lambda: _server_cert_serial(svc)) == _serial(new, "host") != before
        assert live.health().identity == "vm-a"  # the open channel is not cut
        with svc.client("vm-b") as fresh:
            assert fresh.health().identity == "vm-b"


def test_a_new_ca_bundle_admits_the_new_ca_s_certificates(own_pki: Pki, rogue_pki: Pki):
    with running_service(own_pki, crl=True) as svc:
        with svc.client("vm-a", rogue_pki) as c, pytest.raises(HostCallError) as err:
            c.health(timeout_s=3)
        assert err.value.code == ErrorKind.UNAVAILABLE
        bundle = (own_pki.folder / "ca.pem").read_bytes() + (rogue_pki.folder / "ca.pem").read_bytes()
        (own_pki.folder / ".ca.new").write_bytes(bundle)
        os.replace(own_pki.folder / ".ca.new", own_pki.folder / "ca.pem")
        cert, key = rogue_pki.pair("vm-a")
        with HostClient(f"127.0.0.1:{svc.port}", ca=own_pki.folder / "ca.pem", cert=cert, key=key) as c:
            assert _eventually(lambda: c.health(timeout_s=3)).identity == "vm-a"


def test_a_bad_new_file_is_refused_by_name_and_the_old_credentials_stay(own_pki: Pki, caplog):
    caplog.set_level(logging.ERROR, "host_side.credentials")
    with running_service(own_pki, crl=True) as svc:
        served = _server_cert_serial(svc)
        (own_pki.folder / "host.pem").write_text("not a certificate\n")
        with svc.client("vm-a") as c:
            assert c.health().identity == "vm-a"
        assert _server_cert_serial(svc) == served
        msgs = [r.getMessage() for r in caplog.records]
        assert any(
            f"listen.cert: {own_pki.folder / 'host.pem'} is not a PEM certificate" in m
            and "the old certificates stay in use" in m
            for m in msgs
        ), msgs


def test_a_revoked_certificate_is_refused_on_live_and_new_connections_and_a_good_one_served(own_pki: Pki):
    with running_service(own_pki, crl=True) as svc, svc.client("vm-a") as a, svc.client("vm-b") as b:
        with svc.client("stranger") as s, pytest.raises(HostCallError) as err:
            s.health()
        assert err.value.code == ErrorKind.PERMISSION_DENIED
        assert f"serial {_serial(own_pki, 'stranger'):#x} is revoked" in err.value.detail
        assert a.health().identity == "vm-a"
        pki.revoke(own_pki.folder, "vm-a")
        with pytest.raises(HostCallError) as err:
            a.health()  # the open channel: the CRL is checked per call, not only at the handshake
        assert err.value.code == ErrorKind.PERMISSION_DENIED
        assert (
            f"client certificate CN=vm-a serial {_serial(own_pki, 'vm-a'):#x} is revoked" in err.value.detail
        )
        with svc.client("vm-a") as again, pytest.raises(HostCallError):
            again.health()
        assert b.health().identity == "vm-b"


def test_an_expired_client_certificate_is_named_on_both_sides(own_pki: Pki, caplog):
    caplog.set_level(logging.INFO, "host_side.server")
    short = pki.issue(own_pki.folder, "vm-c", valid=datetime.timedelta(seconds=2))
    not_after = x509.load_pem_x509_certificate(short.cert.read_bytes()).not_valid_after_utc
    serial = _serial(own_pki, "vm-c")
    with running_service(own_pki, crl=True) as svc, svc.client("vm-c") as c:
        # A raw channel with the same certificate, without the client's own check, for the host's answer.
        creds = grpc.ssl_channel_credentials(
            (own_pki.folder / "ca.pem").read_bytes(), short.key.read_bytes(), short.cert.read_bytes()
        )
        with grpc.secure_channel(f"127.0.0.1:{svc.port}", creds) as raw:
            stub = pb_grpc.HostPlugStub(raw)  # type: ignore[no-untyped-call]
            assert stub.Health(pb.HealthRequest(), timeout=5).identity == "vm-c"
            assert c.health().identity == "vm-c"
            time.sleep(max(0.0, (not_after - datetime.datetime.now(datetime.UTC)).total_seconds()) + 1.1)
            with pytest.raises(grpc.RpcError) as raw_err:
                stub.Health(pb.HealthRequest(), timeout=5)  # the live connection reaches our code
        call = raw_err.value
        assert call.code() == grpc.StatusCode.PERMISSION_DENIED
        want = f"client certificate CN=vm-c serial {serial:#x} expired at {not_after.isoformat()} (notAfter)"
        assert want in (call.details() or "")
        assert any(want in r.getMessage() for r in caplog.records)
        with pytest.raises(HostCallError) as err:
            c.health()  # the plugin names its own certificate before the TLS layer would refuse it
        assert err.value.code == ErrorKind.FAILED_PRECONDITION
        assert f"this VM certificate CN=vm-c serial {serial:#x} expired at" in err.value.detail
        assert str(short.cert) in err.value.detail
        with pytest.raises(HostCallError, match="expired at"):
            svc.client("vm-c")  # and at load


def test_the_client_picks_up_its_new_certificate_without_a_restart(own_pki: Pki, tmp_path: Path, caplog):
    mine = Pki(tmp_path / "vm")
    mine.folder.mkdir()
    shutil.copy(own_pki.folder / "ca.pem", mine.folder / "ca.pem")
    _replace(own_pki, "vm-a", mine, "me")
    with running_service(own_pki, crl=True) as svc:
        cert, key = mine.pair("me")
        with HostClient(f"127.0.0.1:{svc.port}", ca=mine.folder / "ca.pem", cert=cert, key=key) as c:
            assert c.health().identity == "vm-a"
            _replace(own_pki, "vm-b", mine, "me")  # the identity shows which certificate was used
            assert c.health().identity == "vm-b"
            cert.write_text("garbage\n")
            assert c.health().identity == "vm-b"  # a bad new file: the old channel stays
        assert any("client certificate reload refused" in r.getMessage() for r in caplog.records)


def test_sighup_reloads_what_polling_cannot_see(own_pki: Pki, tmp_path: Path):
    """A CRL replaced by one of the same size and mtime: only SIGHUP makes the real process read it."""
    crl = own_pki.folder / "crl.pem"
    served = crl.read_bytes()
    crl.unlink()
    pki.revoke(own_pki.folder, "vm-a")
    revoking_a = crl.read_bytes()
    size = max(len(served), len(revoking_a))
    crl.write_bytes(served.ljust(size, b"\n"))
    mtime = crl.stat().st_mtime_ns
    build_sysfs(tmp_path / "sys")
    port = free_port()
    cfg = write_config(tmp_path, pki_dir=own_pki.folder, port=port, crl=True)
    proc = launch(cfg, tmp_path / "fake")
    try:
        cert, key = own_pki.pair("vm-a")
        with HostClient(f"127.0.0.1:{port}", ca=own_pki.folder / "ca.pem", cert=cert, key=key) as c:
            assert c.health().identity == "vm-a"
            crl.write_bytes(revoking_a.ljust(size, b"\n"))
            os.utime(crl, ns=(mtime, mtime))
            time.sleep(1.5)  # past the service's file poll
            assert c.health().identity == "vm-a"
            proc.send_signal(signal.SIGHUP)

            def refused() -> None:
                with pytest.raises(HostCallError, match="is revoked"):
                    c.health()

            _eventually(refused)
    finally:
        proc.terminate()
        proc.wait(10)


def test_the_vm_identity_map_is_reloaded_from_the_changed_config_and_a_bad_one_refused(
    own_pki: Pki, tmp_path: Path
):
    build_sysfs(tmp_path / "sys")
    port = free_port()
    cfg = write_config(tmp_path, pki_dir=own_pki.folder, port=port)
    proc = launch(cfg, tmp_path / "fake")
    try:
        cert, key = own_pki.pair("stranger")
        with HostClient(f"127.0.0.1:{port}", ca=own_pki.folder / "ca.pem", cert=cert, key=key) as c:
            with pytest.raises(HostCallError, match="is not a VM of this host"):
                c.health()
            good = cfg.read_text()
            cfg.write_text(good + '[vms.stranger]\ndomain = "dom-stranger"\nbogus = 1\n')
            time.sleep(1.5)  # past the service's file poll: the bad file changed nothing
            with pytest.raises(HostCallError, match="is not a VM of this host"):
                c.health()
            cfg.write_text(good + '[vms.stranger]\ndomain = "dom-stranger"\n')
            assert _eventually(c.health).identity == "stranger"
    finally:
        proc.terminate()
        proc.wait(10)
    assert "config reload refused" in (tmp_path / "fake/service.log").read_text()


def test_a_crl_of_another_ca_is_refused_by_name(own_pki: Pki, tmp_path: Path):
    other = tmp_path / "other"
    pki.init_ca(other, "other CA")
    pki.issue(other, "vm-a")
    pki.revoke(other, "vm-a")
    f = own_pki.folder
    listen = ListenConfig(
        "127.0.0.1:1", f / "ca.pem", f / "host.pem", f / "host.key", other / "crl.pem", f / "s"
    )
    with pytest.raises(ConfigError, match=r"listen\.crl: .*crl\.pem is not signed by a CA of listen\.ca"):
        load_set(listen)
    assert load_set(replace(listen, crl=f / "crl.pem")).revoked == {_serial(own_pki, "stranger")}
