"""Typed errors: every failed call raises an ``AssayError`` carrying the gRPC code, the
contract's reason (``INSUFFICIENT_TOKENS``, ``INVALID_TRANSITION``, ``RATE_LIMITED``,
``RESUME_TOKEN_EXPIRED``, ``ERASED``, …) and, for bad input, one violation per field."""

from __future__ import annotations

from dataclasses import dataclass, field

import grpc
import grpc.aio
from google.rpc import error_details_pb2, status_pb2

__all__ = [
    "AlreadyExists",
    "AssayError",
    "DeadlineExceeded",
    "FailedPrecondition",
    "FieldViolation",
    "InvalidArgument",
    "NotFound",
    "PermissionDenied",
    "ResourceExhausted",
    "ResumeTokenExpired",
    "Unauthenticated",
    "Unavailable",
    "from_rpc_error",
]

STATUS_DETAILS_KEY = "grpc-status-details-bin"


@dataclass(frozen=True)
class FieldViolation:
    """One bad field of a request: its path (``assessment_data.riasec.realistic``) and why."""

    field: str
    description: str


@dataclass
class AssayError(Exception):
    """A call Assay refused or could not serve."""

    code: grpc.StatusCode
    message: str
    reason: str = ""
    metadata: dict[str, str] = field(default_factory=dict)
    violations: list[FieldViolation] = field(default_factory=list)

    def __str__(self) -> str:
        reason = f" [{self.reason}]" if self.reason else ""
        return f"{self.code.name}{reason}: {self.message}"

    @property
    def retryable(self) -> bool:
        """True for the codes a caller may retry (with the same request id)."""
        return self.code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)


class InvalidArgument(AssayError):
    """The request is malformed; ``violations`` names each bad field."""


class NotFound(AssayError):
    """No such job or result for this caller (or its content was erased: reason ERASED)."""


class AlreadyExists(AssayError):
    """The request id was already used with a different payload."""


class FailedPrecondition(AssayError):
    """Refused in the job's or account's state: INSUFFICIENT_TOKENS, INVALID_TRANSITION."""


class ResourceExhausted(AssayError):
    """Too many jobs in flight or calls too fast (RATE_LIMITED); retry later."""


class PermissionDenied(AssayError):
    """The caller's identity may not make this call."""


class Unauthenticated(AssayError):
    """The token is missing, expired or not trusted."""


class Unavailable(AssayError):
    """A service, PostgreSQL or NATS is down for now; retry with the same request id."""


class DeadlineExceeded(AssayError):
    """The call did not finish in time; retry with the same request id."""


class ResumeTokenExpired(AssayError):
    """The watch cursor is older than the events the notifier keeps (OUT_OF_RANGE)."""


_BY_CODE: dict[grpc.StatusCode, type[AssayError]] = {
    grpc.StatusCode.INVALID_ARGUMENT: InvalidArgument,
    grpc.StatusCode.NOT_FOUND: NotFound,
    grpc.StatusCode.ALREADY_EXISTS: AlreadyExists,
    grpc.StatusCode.FAILED_PRECONDITION: FailedPrecondition,
    grpc.StatusCode.RESOURCE_EXHAUSTED: ResourceExhausted,
    grpc.StatusCode.PERMISSION_DENIED: PermissionDenied,
    grpc.StatusCode.UNAUTHENTICATED: Unauthenticated,
    grpc.StatusCode.UNAVAILABLE: Unavailable,
    grpc.StatusCode.DEADLINE_EXCEEDED: DeadlineExceeded,
    grpc.StatusCode.OUT_OF_RANGE: ResumeTokenExpired,
}


def from_rpc_error(err: grpc.aio.AioRpcError) -> AssayError:
    """The typed error for a failed call, with the rich details (AIP-193) it carried."""
    code = err.code()
    found = AssayError(code, err.details() or "")
    for key, value in err.trailing_metadata() or ():
        if key == STATUS_DETAILS_KEY and isinstance(value, bytes):
            _read_details(found, value)
    kind = _BY_CODE.get(code, AssayError)
    return kind(found.code, found.message, found.reason, found.metadata, found.violations)


def _read_details(found: AssayError, raw: bytes) -> None:
    status = status_pb2.Status.FromString(raw)
    for detail in status.details:
        info, bad = error_details_pb2.ErrorInfo(), error_details_pb2.BadRequest()
        if detail.Unpack(info):
            found.reason, found.metadata = info.reason, dict(info.metadata)
        elif detail.Unpack(bad):
            found.violations = [
                FieldViolation(v.field, v.description) for v in bad.field_violations
            ]
