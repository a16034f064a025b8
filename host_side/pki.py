"""A lab certificate authority: one CA, a server certificate for the host, one client certificate per VM.

The client certificate's common name is the VM's identity in the host config ([vms.<identity>]).
Private keys are written 0600; nothing here logs key material.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from contract.errors import ConfigError

_VALID = datetime.timedelta(days=365)


@dataclass(frozen=True)
class Issued:
    cert: Path
    key: Path


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    data = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def init_ca(folder: Path, name: str = "vfhotplug lab CA") -> Issued:
    """Creates ca.pem and ca.key in `folder`; refuses to replace an existing CA."""
    folder.mkdir(parents=True, exist_ok=True)
    out = Issued(folder / "ca.pem", folder / "ca.key")
    if out.cert.exists() or out.key.exists():
        raise ConfigError(f"{folder} already holds a CA (ca.pem/ca.key); remove it or use another --dir")
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(name))
        .issuer_name(_name(name))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + _VALID * 5)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True
        )  # key_cert_sign, crl_sign
        .sign(key, hashes.SHA256())
    )
    _write_key(out.key, key)
    out.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return out


def _ca(folder: Path) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    try:
        ca_key = serialization.load_pem_private_key((folder / "ca.key").read_bytes(), None)
        ca_cert = x509.load_pem_x509_certificate((folder / "ca.pem").read_bytes())
    except OSError as e:
        raise ConfigError(
            f"no CA in {folder} ({e.strerror}); run `vfhotplug-host ca init --dir {folder}`"
        ) from e
    if not isinstance(ca_key, ec.EllipticCurvePrivateKey):
        raise ConfigError(f"{folder / 'ca.key'} is not an EC key made by `vfhotplug-host ca init`")
    return ca_key, ca_cert


def revoke(folder: Path, name: str) -> Path:
    """Adds <name>.pem's serial to the CA's CRL, crl.pem in `folder` (made on first use), and returns it.

    The CRL is replaced atomically, so a host watching it never reads half of one."""
    ca_key, ca_cert = _ca(folder)
    try:
        serial = x509.load_pem_x509_certificate((folder / f"{name}.pem").read_bytes()).serial_number
    except OSError as e:
        raise ConfigError(f"no certificate {folder / name}.pem to revoke ({e.strerror})") from e
    out = folder / "crl.pem"
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(ca_cert.subject)
        .last_update(now - datetime.timedelta(minutes=5))
        .next_update(now + _VALID)
    )
    serials = {serial}
    if out.exists():
        serials |= {r.serial_number for r in x509.load_pem_x509_crl(out.read_bytes())}
    for s in sorted(serials):
        builder = builder.add_revoked_certificate(
            x509.RevokedCertificateBuilder().serial_number(s).revocation_date(now).build()
        )
    tmp = out.with_suffix(".tmp")
    tmp.write_bytes(builder.sign(ca_key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM))
    tmp.replace(out)
    return out


def issue(
    folder: Path,
    name: str,
    *,
    server: bool = False,
    sans: Sequence[str] = (),
    valid: datetime.timedelta = _VALID,
) -> Issued:
    """Signs a certificate for `name` with the CA in `folder`: <name>.pem and <name>.key.

    A client certificate (server=False) carries the VM identity as its common name. A server certificate
    lists `sans` (DNS names or IP addresses) that clients will check. `valid` short makes certificates
    that expire during a test."""
    ca_key, ca_cert = _ca(folder)
    out = Issued(folder / f"{name}.pem", folder / f"{name}.key")
    if out.cert.exists() or out.key.exists():
        raise ConfigError(f"{out.cert} or {out.key} exists already; remove them to issue again")
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    usage = ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(name))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + valid)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    )
    if sans:
        names: list[x509.GeneralName] = []
        for san in sans:
            try:
                names.append(x509.IPAddress(ipaddress.ip_address(san)))
            except ValueError:
                names.append(x509.DNSName(san))
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    cert = builder.sign(ca_key, hashes.SHA256())
    _write_key(out.key, key)
    out.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return out
