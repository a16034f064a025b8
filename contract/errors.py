"""The error vocabulary both sides share, without grpc: each error names its kind, and the server and the
client each map kinds to gRPC status codes in one place (host_side.server, host_side.api.client)."""

from __future__ import annotations

from enum import StrEnum


class ErrorKind(StrEnum):
    """What failed, in gRPC's status names so the mapping either way is one lookup."""

    INVALID_ARGUMENT = "INVALID_ARGUMENT"
    NOT_FOUND = "NOT_FOUND"
    RESOURCE_EXHAUSTED = "RESOURCE_EXHAUSTED"
    PERMISSION_DENIED = "PERMISSION_DENIED"
    FAILED_PRECONDITION = "FAILED_PRECONDITION"
    ABORTED = "ABORTED"
    UNAVAILABLE = "UNAVAILABLE"
    DEADLINE_EXCEEDED = "DEADLINE_EXCEEDED"
    INTERNAL = "INTERNAL"
    UNKNOWN = "UNKNOWN"

    @property
    def retryable(self) -> bool:
        """The same call (same request id) may succeed later: the host or the path to it was down."""
        return self in (ErrorKind.UNAVAILABLE, ErrorKind.DEADLINE_EXCEEDED)

    @classmethod
    def named(cls, name: str) -> ErrorKind:
        """The kind of a status name from the wire; one this vocabulary lacks is UNKNOWN."""
        try:
            return cls(name)
        except ValueError:
            return cls.UNKNOWN


class HostSideError(Exception):
    """Base of every error the host side reports; the message names VM, pod, VF and what to do."""

    kind: ErrorKind = ErrorKind.INTERNAL


class InvalidRequest(HostSideError):
    kind = ErrorKind.INVALID_ARGUMENT


class UnknownPool(HostSideError):
    kind = ErrorKind.NOT_FOUND


class NotFound(HostSideError):
    kind = ErrorKind.NOT_FOUND


class Exhausted(HostSideError):
    """Pool empty or quota reached."""

    kind = ErrorKind.RESOURCE_EXHAUSTED


class PermissionDenied(HostSideError):
    kind = ErrorKind.PERMISSION_DENIED


class PreconditionFailed(HostSideError):
    """The VM cannot take the device now: not running, no free pcie-root-port, device in use."""

    kind = ErrorKind.FAILED_PRECONDITION


class BackendUnavailable(HostSideError):
    """libvirt (or the netlink socket) cannot be reached; retrying later may work."""

    kind = ErrorKind.UNAVAILABLE


class DeadlineExceeded(HostSideError):
    kind = ErrorKind.DEADLINE_EXCEEDED


class ConfigError(HostSideError):
    """A config file is wrong; the message names the file and key."""
