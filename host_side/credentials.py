"""The host's TLS material, reloaded without a restart: server certificate and key, CA bundle and CRL.

gRPC asks `fetch` at every new handshake; it reloads when a file changed (SIGHUP forces it through
`refresh(force=True)`). A bad new file is refused with a log line naming it, and the old set stays in use.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import cast

import grpc
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from contract.errors import ConfigError
from host_side.api.certs import stamp
from host_side.config import ListenConfig

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TlsSet:
    key: bytes
    cert: bytes
    ca: bytes
    revoked: frozenset[int]  # serials the CRL lists


def _read(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as e:
        raise ConfigError(
            f"listen.{what}: cannot read {path}: {e.strerror}; point it at a readable PEM file"
        ) from e


def _revoked(crl_path: Path, crl_pem: bytes, cas: list[x509.Certificate]) -> frozenset[int]:
    try:
        crl = x509.load_pem_x509_crl(crl_pem)
    except ValueError as e:
        raise ConfigError(f"listen.crl: {crl_path} is not a PEM CRL ({e})") from e
    if not any(crl.issuer == ca.subject and crl.is_signature_valid(ca.public_key()) for ca in cas):  # type: ignore[arg-type]
        raise ConfigError(f"listen.crl: {crl_path} is not signed by a CA of listen.ca; issue it with that CA")
    return frozenset(r.serial_number for r in crl)


def load_set(listen: ListenConfig) -> TlsSet:
    """Reads and checks the files together. Raises ConfigError naming the file that is wrong."""
    assert listen.key is not None and listen.cert is not None and listen.ca is not None
    key, cert, ca = _read(listen.key, "key"), _read(listen.cert, "cert"), _read(listen.ca, "ca")
    try:
        cas = x509.load_pem_x509_certificates(ca)
    except ValueError as e:
        raise ConfigError(f"listen.ca: {listen.ca} is not a PEM certificate bundle ({e})") from e
    try:
        leaf = x509.load_pem_x509_certificate(cert)
    except ValueError as e:
        raise ConfigError(f"listen.cert: {listen.cert} is not a PEM certificate ({e})") from e
    try:
        private = serialization.load_pem_private_key(key, None)
    except (ValueError, TypeError) as e:
        raise ConfigError(f"listen.key: {listen.key} is not an unencrypted PEM private key ({e})") from e
    pub = serialization.PublicFormat.SubjectPublicKeyInfo
    if private.public_key().public_bytes(serialization.Encoding.DER, pub) != leaf.public_key().public_bytes(
        serialization.Encoding.DER, pub
    ):
        raise ConfigError(f"listen.key: {listen.key} is not the key of {listen.cert}; replace both together")
    revoked = frozenset[int]()
    if listen.crl is not None:
        revoked = _revoked(listen.crl, _read(listen.crl, "crl"), cas)
    return TlsSet(key, cert, ca, revoked)


class ServerTls:
    """The live TLS set of the mTLS listener, built with the [listen] paths."""

    def __init__(self, listen: ListenConfig) -> None:
        self._listen = listen
        self._paths = (listen.key, listen.cert, listen.ca, listen.crl)
        self._lock = threading.Lock()
        self._stamp = stamp(self._paths)
        self._current = load_set(listen)
        self._served = self._current  # what gRPC was last handed

    @staticmethod
    def _config(s: TlsSet) -> grpc.ServerCertificateConfiguration:
        return grpc.ssl_server_certificate_configuration([(s.key, s.cert)], root_certificates=s.ca)

    def credentials(self) -> grpc.ServerCredentials:
        # gRPC documents None from the fetcher as "no change"; its stubs leave None out.
        fetch = cast(Callable[[], grpc.ServerCertificateConfiguration], self._fetch)
        return grpc.dynamic_ssl_server_credentials(
            self._config(self._current), fetch, require_client_authentication=True
        )

    def refresh(self, *, force: bool = False) -> bool:
        """Reloads when a file changed (or when forced); True when a new set is in use."""
        with self._lock:
            now = stamp(self._paths)
            if now == self._stamp and not force:
                return False
            self._stamp = now  # a refused file is not read again until it changes
            try:
                new = load_set(self._listen)
            except ConfigError as e:
                log.error("TLS reload refused, the old certificates stay in use: %s", e)
                return False
            changed = new != self._current
            self._current = new
        if changed:
            log.info("TLS reloaded: server certificate, CA bundle and CRL (%d revoked)", len(new.revoked))
        return changed

    def revoked(self, serial: int) -> bool:
        self.refresh()
        return serial in self._current.revoked

    def _fetch(self) -> grpc.ServerCertificateConfiguration | None:
        self.refresh()
        with self._lock:
            if self._served is self._current:
                return None  # gRPC's way of saying "no change"
            self._served = self._current
            return self._config(self._current)
