"""What the VM side asks of the host side, as plain records: the gRPC client (`host_side.api.client`) turns
these into protobuf messages and back, so VM-side code and its tests never touch generated classes."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from contract.errors import ErrorKind
from contract.pci import PciAddress


@dataclass(frozen=True)
class VfRequest:
    """One line of a pod's demand as the host sees it (binding mode stays in the VM)."""

    pool: str
    count: int = 1
    mac: str | None = None  # None: the host generates a unique locally administered MAC
    vlan: int | None = None  # None: the pool's default VLAN
    qos: int = 0
    trust: bool | None = None
    spoofchk: bool | None = None
    min_tx_rate_mbps: int = 0
    max_tx_rate_mbps: int = 0
    numa: int | None = None


@dataclass(frozen=True)
class GrantedVf:
    """A VF leased to a pod and present in the VM."""

    lease_id: str
    pool: str
    host_pci: PciAddress
    guest_pci: PciAddress | None
    mac: str
    vlan: int
    numa: int | None
    request_index: int  # which VfRequest of the call this VF answers


class HostCallError(Exception):
    """A host call failed; `code` says how (ErrorKind.RESOURCE_EXHAUSTED, ErrorKind.UNAVAILABLE, ...)."""

    def __init__(self, code: ErrorKind, message: str, retry_after_s: float | None = None) -> None:
        super().__init__(f"host refused ({code}): {message}")
        self.code = code
        self.detail = message
        self.retry_after_s = retry_after_s  # the host's hint when it refused for rate: call again after

    @property
    def retryable(self) -> bool:
        return self.code.retryable or self.retry_after_s is not None


class HostApi(Protocol):
    """The host-side service as the VM side uses it. Every call is idempotent by `request_id`."""

    def attach(
        self,
        pod_uid: str,
        pod_name: str,
        requests: Sequence[VfRequest],
        request_id: str,
        timeout_s: float,
    ) -> list[GrantedVf]:
        """Claim from the warm pool where possible, else hot-plug; all or nothing."""
        ...

    def release(self, pod_uid: str, request_id: str, timeout_s: float) -> None:
        """Give back every lease of the pod; returns once the host confirms them detached (or gone)."""
        ...

    def sync(self, live_pod_uids: Sequence[str], timeout_s: float) -> None:
        """Tell the host which pods of this VM still live; it releases the others' leases."""
        ...
