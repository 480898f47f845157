"""Errors of berth_client: one exception class per gRPC status code that
berthd uses (see "Errors" in docs/api.md)."""

from __future__ import annotations

from typing import Dict, Optional, Type

import grpc

#: Trailer of a failed Start (or exec) whose command could not be run:
#: 127 (not found) or 126 (not executable), like docker run's exit code.
EXIT_CODE_KEY = "berth-exit-code"


class BerthError(Exception):
    """An RPC failed. ``code`` is the :class:`grpc.StatusCode`, ``message``
    the daemon's text; ``exit_code`` is set when Start could not execute
    the command (127 not found, 126 not executable)."""

    def __init__(self, code: grpc.StatusCode, message: str, exit_code: Optional[int] = None):
        super().__init__(message)
        self.code = code
        self.message = message
        self.exit_code = exit_code

    def __str__(self) -> str:
        return f"{self.code.name}: {self.message}"

    @staticmethod
    def from_rpc(err: grpc.RpcError) -> "BerthError":
        """The exception for a failed call (a grpc.RpcError or a finished
        call object), of the subclass for its code."""
        code = err.code() if hasattr(err, "code") else grpc.StatusCode.UNKNOWN
        message = err.details() if hasattr(err, "details") else str(err)
        exit_code = None
        trailers = err.trailing_metadata() if hasattr(err, "trailing_metadata") else None
        for key, value in trailers or ():
            if key == EXIT_CODE_KEY:
                try:
                    exit_code = int(value)
                except ValueError:
                    pass
        cls = _ERRORS.get(code, BerthError)
        return cls(code, message or "", exit_code)


class NotFound(BerthError):
    """No such container, image, volume, network or exec."""


class AlreadyExists(BerthError):
    """A name is already in use."""


class InvalidArgument(BerthError):
    """The request is malformed (a bad reference, filter, limit, ...)."""


class Conflict(BerthError):
    """The state forbids it (FailedPrecondition): an image in use, a running
    container removed without force, a command that cannot be executed."""


class PermissionDenied(BerthError):
    """A registry refused the credentials or the operation."""


class Unavailable(BerthError):
    """The daemon (or a service or registry behind it) cannot be reached;
    also a connection refused by TLS (no or a wrong client certificate)."""


class Internal(BerthError):
    """The daemon failed (a bug or an I/O error on its side)."""


class Cancelled(BerthError):
    """The call was cancelled."""


class DeadlineExceeded(BerthError):
    """The call's timeout passed."""


_ERRORS: Dict[grpc.StatusCode, Type[BerthError]] = {
    grpc.StatusCode.NOT_FOUND: NotFound,
    grpc.StatusCode.ALREADY_EXISTS: AlreadyExists,
    grpc.StatusCode.INVALID_ARGUMENT: InvalidArgument,
    grpc.StatusCode.FAILED_PRECONDITION: Conflict,
    grpc.StatusCode.PERMISSION_DENIED: PermissionDenied,
    grpc.StatusCode.UNAVAILABLE: Unavailable,
    grpc.StatusCode.INTERNAL: Internal,
    grpc.StatusCode.CANCELLED: Cancelled,
    grpc.StatusCode.DEADLINE_EXCEEDED: DeadlineExceeded,
}
