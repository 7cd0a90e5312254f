"""Domain errors and their gRPC status form (ARCHITECTURE §7, AIP-193).

Servicers raise an ``AssayError`` subclass; the server's error mapping
(``assaylib.error_mapping``) ends the call with its ``google.rpc.Status`` carrying
``ErrorInfo{reason, domain: "assay"}`` (and, for ``InvalidArgument``, a ``BadRequest`` with
one field violation per bad field), through ``grpc_status.rpc_status``. Clients turn a failed
call back into the same subclass with ``error_from_rpc``. This module imports nothing of
Assay's; the mapping imports it, never the other way round.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import grpc
import grpc.aio
from google.protobuf import any_pb2
from google.protobuf.message import Message
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

__all__ = [
    "DOMAIN",
    "STATUS_DETAILS_KEY",
    "AlreadyExists",
    "AssayError",
    "DeadlineExceeded",
    "Erased",
    "FailedPrecondition",
    "FieldViolation",
    "InsufficientTokens",
    "Internal",
    "InvalidArgument",
    "InvalidTransition",
    "NotFound",
    "PermissionDenied",
    "RateLimited",
    "ResourceExhausted",
    "ResumeTokenExpired",
    "Unauthenticated",
    "Unavailable",
    "UnsupportedAssessmentType",
    "error_from_parts",
    "error_from_rpc",
    "field_violations_of",
    "reason_of",
    "rich_status_of",
]

DOMAIN = "assay"
"""``ErrorInfo.domain`` of every error Assay raises."""
STATUS_DETAILS_KEY = "grpc-status-details-bin"
"""Trailing-metadata key holding the serialized ``google.rpc.Status``."""
MAX_MESSAGE_CHARS = 300
"""Longest status message sent; longer ones (quoting hostile input) are cut."""
MAX_FIELD_CHARS = 120
"""Longest field path or metadata value in a status; a path can hold a caller's map key."""
MAX_DESCRIPTION_CHARS = 160
"""Longest field-violation description; descriptions may quote the bad value."""
MAX_VIOLATIONS = 10
"""Field violations reported one by one; the rest are counted in one more violation, so a
status always fits in a client's 8 KiB metadata limit whatever the request held."""

log = logging.getLogger(__name__)


def clip(text: str, limit: int) -> str:
    """``text`` cut to ``limit`` characters, marked with an ellipsis when cut."""
    return text if len(text) <= limit else text[: limit - 1] + "…"


@dataclass(frozen=True)
class FieldViolation:
    """One bad request field: ``field`` is a path like ``assessment_data.riasec.realistic``."""

    field: str
    description: str


class AssayError(Exception):
    """Root of Assay's domain errors; each maps to one gRPC status code and reason."""

    code: grpc.StatusCode = grpc.StatusCode.UNKNOWN
    reason: str = "UNKNOWN"

    def __init__(
        self,
        message: str,
        *,
        reason: str | None = None,
        metadata: Mapping[str, str] | None = None,
    ) -> None:
        message = clip(message, MAX_MESSAGE_CHARS)
        super().__init__(message)
        self.message = message
        if reason is not None:
            self.reason = reason
        self.metadata: dict[str, str] = {
            clip(key, MAX_FIELD_CHARS): clip(value, MAX_FIELD_CHARS)
            for key, value in (metadata or {}).items()
        }

    def details(self) -> list[Message]:
        """The ``google.rpc`` detail messages this error carries."""
        info = error_details_pb2.ErrorInfo(reason=self.reason, domain=DOMAIN)
        info.metadata.update(self.metadata)
        return [info]

    def to_rpc_status(self) -> status_pb2.Status:
        """This error as a ``google.rpc.Status`` message."""
        status = status_pb2.Status(code=self.code.value[0], message=self.message)
        for detail in self.details():
            packed = any_pb2.Any()
            packed.Pack(detail)
            status.details.append(packed)
        return status

    def to_status(self) -> grpc.Status:
        """This error as a ``grpc.Status`` for ``context.abort_with_status``."""
        status: grpc.Status = rpc_status.to_status(self.to_rpc_status())
        return status

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.message!r}, reason={self.reason!r})"


class InvalidArgument(AssayError):
    """The request is malformed; ``violations`` names each bad field (INVALID_ARGUMENT)."""

    code = grpc.StatusCode.INVALID_ARGUMENT
    reason = "INVALID_ARGUMENT"

    def __init__(self, violations: Sequence[FieldViolation], message: str = "") -> None:
        self.violations = reported_violations(violations)
        if not message:
            fields = ", ".join(v.field for v in self.violations) or "request"
            message = f"invalid {fields}"
        super().__init__(message)

    def details(self) -> list[Message]:
        """ErrorInfo plus a BadRequest listing every field violation."""
        bad_request = error_details_pb2.BadRequest(
            field_violations=[
                error_details_pb2.BadRequest.FieldViolation(
                    field=v.field, description=v.description
                )
                for v in self.violations
            ]
        )
        return [*super().details(), bad_request]


def reported_violations(violations: Sequence[FieldViolation]) -> list[FieldViolation]:
    """The violations a status carries: the first MAX_VIOLATIONS, clipped, then one counting
    the rest."""
    reported = [
        FieldViolation(clip(v.field, MAX_FIELD_CHARS), clip(v.description, MAX_DESCRIPTION_CHARS))
        for v in violations[:MAX_VIOLATIONS]
    ]
    if len(violations) > MAX_VIOLATIONS:
        more = len(violations) - MAX_VIOLATIONS
        reported.append(FieldViolation("request", f"and {more} more violation(s) not listed"))
    return reported


class NotFound(AssayError):
    """The entity does not exist, or the caller may not know it exists (NOT_FOUND)."""

    code = grpc.StatusCode.NOT_FOUND
    reason = "NOT_FOUND"


class Erased(NotFound):
    """The result's content was erased (EraseUserData or the retention); nothing is left to
    read (NOT_FOUND, reason ERASED)."""

    reason = "ERASED"


class AlreadyExists(AssayError):
    """The entity exists already, e.g. a reused request_id with another payload."""

    code = grpc.StatusCode.ALREADY_EXISTS
    reason = "ALREADY_EXISTS"


class FailedPrecondition(AssayError):
    """The system is not in a state that allows the operation (FAILED_PRECONDITION)."""

    code = grpc.StatusCode.FAILED_PRECONDITION
    reason = "FAILED_PRECONDITION"


class InsufficientTokens(FailedPrecondition):
    """The user's token balance does not cover the cost; nothing was written."""

    reason = "INSUFFICIENT_TOKENS"


class InvalidTransition(FailedPrecondition):
    """The job state machine does not allow this transition from the current state."""

    reason = "INVALID_TRANSITION"


class UnsupportedAssessmentType(FailedPrecondition):
    """A valid assessment name for which no analyzer is available."""

    reason = "UNSUPPORTED_ASSESSMENT_TYPE"


class ResourceExhausted(AssayError):
    """A quota or limit is used up (RESOURCE_EXHAUSTED)."""

    code = grpc.StatusCode.RESOURCE_EXHAUSTED
    reason = "RESOURCE_EXHAUSTED"


class RateLimited(ResourceExhausted):
    """The caller has too many requests or jobs in flight; retry later."""

    reason = "RATE_LIMITED"


class ResumeTokenExpired(AssayError):
    """A WatchJobs resume cursor is older than the events stream keeps (OUT_OF_RANGE)."""

    code = grpc.StatusCode.OUT_OF_RANGE
    reason = "RESUME_TOKEN_EXPIRED"


class Unauthenticated(AssayError):
    """The bearer token is missing, malformed, expired or not ours (UNAUTHENTICATED)."""

    code = grpc.StatusCode.UNAUTHENTICATED
    reason = "UNAUTHENTICATED"


class PermissionDenied(AssayError):
    """The caller is authenticated but its roles do not allow this call."""

    code = grpc.StatusCode.PERMISSION_DENIED
    reason = "PERMISSION_DENIED"


class Unavailable(AssayError):
    """A dependency (PostgreSQL, NATS, another service) is down; the call may be retried."""

    code = grpc.StatusCode.UNAVAILABLE
    reason = "UNAVAILABLE"


class DeadlineExceeded(AssayError):
    """The operation did not finish within its deadline."""

    code = grpc.StatusCode.DEADLINE_EXCEEDED
    reason = "DEADLINE_EXCEEDED"


class Internal(AssayError):
    """An unexpected server fault; the message never carries the underlying exception."""

    code = grpc.StatusCode.INTERNAL
    reason = "INTERNAL"


_BY_REASON: dict[str, type[AssayError]] = {
    cls.reason: cls
    for cls in (
        InsufficientTokens,
        InvalidTransition,
        UnsupportedAssessmentType,
        RateLimited,
        ResumeTokenExpired,
        Erased,
    )
}
_BY_CODE: dict[grpc.StatusCode, type[AssayError]] = {
    cls.code: cls
    for cls in (
        InvalidArgument,
        NotFound,
        AlreadyExists,
        FailedPrecondition,
        ResourceExhausted,
        Unauthenticated,
        PermissionDenied,
        Unavailable,
        DeadlineExceeded,
        Internal,
    )
}


# ---- client side -------------------------------------------------------------------------


def rich_status_of(err: grpc.RpcError) -> status_pb2.Status | None:
    """The ``google.rpc.Status`` in a failed call's trailing metadata, if any (and well
    formed)."""
    try:
        status: status_pb2.Status | None = rpc_status.from_call(err)
    except Exception:  # no metadata, a code that disagrees, bytes that do not decode
        return None
    return status


def error_from_rpc(err: grpc.RpcError) -> AssayError:
    """Rebuild the AssayError a server raised from a failed call (reason and violations kept).

    Errors without rich details become the subclass for their code, or a plain AssayError
    carrying the original code.
    """
    code_of = getattr(err, "code", None)
    code = code_of() if callable(code_of) else grpc.StatusCode.UNKNOWN
    details_of = getattr(err, "details", None)
    message = (details_of() if callable(details_of) else None) or ""
    reason: str | None = None
    metadata: dict[str, str] = {}
    violations: list[FieldViolation] = []
    rich = rich_status_of(err)
    for packed in rich.details if rich is not None else ():
        info = error_details_pb2.ErrorInfo()
        bad_request = error_details_pb2.BadRequest()
        if packed.Unpack(info):
            reason, metadata = info.reason, dict(info.metadata)
        elif packed.Unpack(bad_request):
            violations += [
                FieldViolation(v.field, v.description) for v in bad_request.field_violations
            ]
    return _build_error(code, message, reason, metadata, violations)


def _build_error(
    code: grpc.StatusCode,
    message: str,
    reason: str | None,
    metadata: Mapping[str, str],
    violations: list[FieldViolation],
) -> AssayError:
    cls = _BY_REASON.get(reason or "") or _BY_CODE.get(code) or AssayError
    if cls is InvalidArgument:
        error: AssayError = InvalidArgument(violations, message)
        if reason:
            error.reason = reason
        error.metadata = dict(metadata)
        return error
    error = cls(
        message, reason=reason or (code.name if cls is AssayError else None), metadata=metadata
    )
    error.code = code
    return error


def error_from_parts(
    code: int, message: str, reason: str, metadata: Mapping[str, str]
) -> AssayError:
    """Rebuild an AssayError from a batch item's error (its numeric code, message, reason)."""
    status = next((c for c in grpc.StatusCode if c.value[0] == code), grpc.StatusCode.UNKNOWN)
    return _build_error(status, message, reason or None, metadata, [])


def reason_of(err: BaseException) -> str:
    """The ErrorInfo reason of an AssayError or failed gRPC call ("" for anything else)."""
    if isinstance(err, AssayError):
        return err.reason
    if isinstance(err, grpc.RpcError):
        return error_from_rpc(err).reason
    return ""


def field_violations_of(err: BaseException) -> list[FieldViolation]:
    """The BadRequest field violations of an InvalidArgument or failed gRPC call."""
    if isinstance(err, grpc.RpcError):
        err = error_from_rpc(err)
    return list(err.violations) if isinstance(err, InvalidArgument) else []
