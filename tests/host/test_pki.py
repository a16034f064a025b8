from __future__ import annotations

import stat

import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from host_side.__main__ import main


def test_ca_init_and_issue_make_a_chain_with_the_vm_identity(tmp_path, capsys):
    d = str(tmp_path / "pki")
    assert main(["ca", "init", "--dir", d]) == 0
    assert main(["ca", "issue", "--dir", d, "--vm", "worker-1"]) == 0
    assert main(["ca", "issue", "--dir", d, "--server", "host", "--san", "127.0.0.1", "--san", "hv1"]) == 0
    ca = x509.load_pem_x509_certificate((tmp_path / "pki/ca.pem").read_bytes())
    vm = x509.load_pem_x509_certificate((tmp_path / "pki/worker-1.pem").read_bytes())
    srv = x509.load_pem_x509_certificate((tmp_path / "pki/host.pem").read_bytes())
    vm.verify_directly_issued_by(ca)
    srv.verify_directly_issued_by(ca)
    assert vm.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "worker-1"
    assert list(vm.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value) == [
        ExtendedKeyUsageOID.CLIENT_AUTH
    ]
    sans = srv.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.DNSName) == ["hv1"]
    assert [str(ip) for ip in sans.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]
    for key in ("ca.key", "worker-1.key", "host.key"):
        assert stat.S_IMODE((tmp_path / "pki" / key).stat().st_mode) == 0o600
    assert "worker-1.pem" in capsys.readouterr().out


def test_ca_revoke_adds_each_vm_to_one_crl_signed_by_the_ca(tmp_path, capsys):
    d = str(tmp_path / "pki")
    assert main(["ca", "init", "--dir", d]) == 0
    for vm in ("worker-1", "worker-2"):
        assert main(["ca", "issue", "--dir", d, "--vm", vm]) == 0
        assert main(["ca", "revoke", "--dir", d, "--vm", vm]) == 0
    ca = x509.load_pem_x509_certificate((tmp_path / "pki/ca.pem").read_bytes())
    crl = x509.load_pem_x509_crl((tmp_path / "pki/crl.pem").read_bytes())
    assert crl.is_signature_valid(ca.public_key())  # type: ignore[arg-type]
    serials = {
        x509.load_pem_x509_certificate((tmp_path / f"pki/{vm}.pem").read_bytes()).serial_number
        for vm in ("worker-1", "worker-2")
    }
    assert {r.serial_number for r in crl} == serials
    assert "revoked worker-2" in capsys.readouterr().out
    assert main(["ca", "revoke", "--dir", d, "--vm", "nobody"]) == 2
    assert "no certificate" in capsys.readouterr().err


def test_ca_refuses_to_overwrite_and_needs_a_ca(tmp_path, capsys):
    d = str(tmp_path / "pki")
    assert main(["ca", "issue", "--dir", d, "--vm", "x"]) == 2
    assert "run `vfhotplug-host ca init" in capsys.readouterr().err
    assert main(["ca", "init", "--dir", d]) == 0
    assert main(["ca", "init", "--dir", d]) == 2
    assert main(["ca", "issue", "--dir", d, "--vm", "x"]) == 0
    assert main(["ca", "issue", "--dir", d, "--vm", "x"]) == 2
    assert "exists already" in capsys.readouterr().err


def test_serve_with_a_bad_config_says_which_key(tmp_path, capsys):
    (tmp_path / "h.toml").write_text('backend = "libvirt"\nstate_dir = "s"\n[listen]\n[pools.p]\npfs = []\n')
    assert main(["serve", "--config", str(tmp_path / "h.toml")]) == 2
    assert "pools.p.pfs: needs at least one PF" in capsys.readouterr().err


@pytest.mark.parametrize("argv", [["ca"], ["ca", "issue", "--dir", "x"]])
def test_cli_usage_errors(argv):
    with pytest.raises(SystemExit):
        main(argv)
