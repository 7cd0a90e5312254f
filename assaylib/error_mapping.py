"""Server side of the error model: end each RPC whose servicer raised with the right status.

Re-exported from ``assaylib.errors``; see ``status_for_exception`` for the mapping.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import grpc
import grpc.aio

from assaylib._handlers import Context, Guard, GuardingInterceptor
from assaylib.errors import (
    STATUS_DETAILS_KEY,
    AssayError,
    DeadlineExceeded,
    GrpcStatus,
    Internal,
    Unavailable,
)

__all__ = ["ErrorMappingInterceptor", "status_for_exception"]

log = logging.getLogger(__name__)


@functools.cache
def _transient_types() -> tuple[type[BaseException], ...]:
    """Exception types meaning "a backing service is down": imported lazily, if installed."""
    found: list[type[BaseException]] = []
    candidates = {
        "asyncpg.exceptions": (
            "PostgresConnectionError",
            "InterfaceError",
            "CannotConnectNowError",
        ),
        "sqlalchemy.exc": ("OperationalError", "InterfaceError", "TimeoutError"),
        "nats.errors": (
            "ConnectionClosedError",
            "NoServersError",
            "TimeoutError",
            "NoRespondersError",
            "StaleConnectionError",
        ),
        "nats.js.errors": ("ServiceUnavailableError",),
    }
    for module_name, names in candidates.items():
        try:
            module = __import__(module_name, fromlist=list(names))
        except ImportError:
            continue
        found += [getattr(module, name) for name in names if hasattr(module, name)]
    return tuple(found)


def _is_transient(err: BaseException) -> bool:
    if isinstance(err, _transient_types()):
        return True
    # SQLAlchemy wraps driver errors; a dropped connection is flagged on the wrapper.
    return bool(getattr(err, "connection_invalidated", False))


def _passthrough_status(err: grpc.aio.AioRpcError) -> grpc.Status:
    trailing = tuple(
        (key, value) for key, value in err.trailing_metadata() or () if key == STATUS_DETAILS_KEY
    )
    return GrpcStatus(err.code(), err.details() or "", trailing)


def status_for_exception(err: Exception, method: str = "") -> grpc.Status:
    """The status a servicer exception should end its RPC with; logs what it hides."""
    if isinstance(err, AssayError):
        return err.to_status()
    if isinstance(err, grpc.aio.AioRpcError):
        return _passthrough_status(err)
    if _is_transient(err):
        log.warning("%s: dependency unavailable: %r", method, err)
        return Unavailable(f"a dependency is unavailable ({type(err).__name__}); retry").to_status()
    if isinstance(err, asyncio.TimeoutError):
        log.warning("%s: timed out", method)
        return DeadlineExceeded("deadline exceeded").to_status()
    if isinstance(err, OSError):
        log.warning("%s: dependency unavailable: %r", method, err)
        return Unavailable(f"a dependency is unavailable ({type(err).__name__}); retry").to_status()
    log.error("%s: unhandled exception", method, exc_info=err)
    return Internal("internal error").to_status()


def _guard_for(method: str) -> Guard:
    @asynccontextmanager
    async def map_errors(context: Context, request: Any) -> AsyncIterator[None]:
        try:
            yield
        except grpc.aio.AbortError:
            raise  # the servicer (or an inner interceptor) already chose the status
        except Exception as err:
            await context.abort_with_status(status_for_exception(err, method))

    return map_errors


class ErrorMappingInterceptor(GuardingInterceptor):
    """Ends each RPC whose servicer raised with the right status (see ``status_for_exception``).

    AssayError → its rich status; a downstream call's AioRpcError → passed through unchanged;
    PostgreSQL/NATS/connection failures → UNAVAILABLE; timeouts → DEADLINE_EXCEEDED; anything
    else → INTERNAL "internal error", with the traceback logged but never sent.
    """

    def guard_for(self, details: grpc.HandlerCallDetails) -> Guard:
        """Map the exceptions of every call."""
        return _guard_for(details.method)
