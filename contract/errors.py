"""The host side's one error family. Each error carries the gRPC status it maps to; the mapping to the
wire happens in exactly one place (the gRPC servicer)."""

from __future__ import annotations

import grpc


class HostSideError(Exception):
    """Base of every error the host side reports; the message names VM, pod, VF and what to do."""

    status: grpc.StatusCode = grpc.StatusCode.INTERNAL


class InvalidRequest(HostSideError):
    status = grpc.StatusCode.INVALID_ARGUMENT


class UnknownPool(HostSideError):
    status = grpc.StatusCode.NOT_FOUND


class NotFound(HostSideError):
    status = grpc.StatusCode.NOT_FOUND


class Exhausted(HostSideError):
    """Pool empty or quota reached."""

    status = grpc.StatusCode.RESOURCE_EXHAUSTED


class PermissionDenied(HostSideError):
    status = grpc.StatusCode.PERMISSION_DENIED


class PreconditionFailed(HostSideError):
    """The VM cannot take the device now: not running, no free pcie-root-port, device in use."""

    status = grpc.StatusCode.FAILED_PRECONDITION


class BackendUnavailable(HostSideError):
    """libvirt (or the netlink socket) cannot be reached; retrying later may work."""

    status = grpc.StatusCode.UNAVAILABLE


class DeadlineExceeded(HostSideError):
    status = grpc.StatusCode.DEADLINE_EXCEEDED


class ConfigError(HostSideError):
    """A config file is wrong; the message names the file and key."""
