"""X.509 facts both ends of the API check themselves, since gRPC's TLS layer tells neither side why."""

from __future__ import annotations

import datetime
import functools
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509


@dataclass(frozen=True)
class CertFacts:
    subject: str  # RFC 4514, e.g. CN=vm-a
    serial: int
    not_after: datetime.datetime  # UTC

    def expired(self, now: datetime.datetime) -> bool:
        return now > self.not_after

    def named(self) -> str:
        return f"{self.subject} serial {self.serial:#x}"


@functools.lru_cache(maxsize=256)
def facts(pem: bytes) -> CertFacts:
    """The first certificate of a PEM chain. Raises ValueError when it is not one."""
    cert = x509.load_pem_x509_certificate(pem)
    return CertFacts(cert.subject.rfc4514_string(), cert.serial_number, cert.not_valid_after_utc)


def expiry_message(f: CertFacts, whose: str) -> str:
    return (
        f"{whose} certificate {f.named()} expired at {f.not_after.isoformat()} (notAfter); "
        "issue a new one (`vfhotplug-host ca issue`) and put it in place; it is picked up without a restart"
    )


def now_utc() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def stamp(paths: tuple[Path | None, ...]) -> tuple[tuple[int, int] | None, ...]:
    """What changes when any of the files is replaced or rewritten: mtime and size."""
    out: list[tuple[int, int] | None] = []
    for p in paths:
        try:
            st = p.stat() if p is not None else None
        except OSError:
            st = None
        out.append((st.st_mtime_ns, st.st_size) if st is not None else None)
    return tuple(out)
