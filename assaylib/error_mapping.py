"""Server side of the error model: end each RPC whose servicer raised with the right status.

Each service says which exception types mean "a backing service is down" (its database
driver's, NATS's) when it builds its server; nothing here imports a driver by name.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

import grpc
import grpc.aio
from google.rpc import status_pb2
from grpc_status import rpc_status

from assaylib._handlers import Context, Guard, GuardingInterceptor
from assaylib.errors import AssayError, DeadlineExceeded, Internal, Unavailable, rich_status_of

__all__ = ["ErrorMappingInterceptor", "status_for_exception"]

log = logging.getLogger(__name__)

Transient = tuple[type[BaseException], ...]


def _passthrough_status(err: grpc.aio.AioRpcError) -> grpc.Status:
    """A downstream call's failure, forwarded as it was (rich details included)."""
    status = rich_status_of(err) or status_pb2.Status(
        code=err.code().value[0], message=err.details() or ""
    )
    forwarded: grpc.Status = rpc_status.to_status(status)
    return forwarded


def status_for_exception(
    err: Exception, method: str = "", transient: Transient = ()
) -> grpc.Status:
    """The status a servicer exception should end its RPC with; logs what it hides."""
    if isinstance(err, AssayError):
        return err.to_status()
    if isinstance(err, grpc.aio.AioRpcError):
        return _passthrough_status(err)
    if isinstance(err, (*transient, ConnectionError)):
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


class ErrorMappingInterceptor(GuardingInterceptor):
    """Ends each RPC whose servicer raised with the right status (see ``status_for_exception``).

    AssayError → its rich status; a downstream call's AioRpcError → passed through unchanged;
    a ``transient`` exception (PostgreSQL or NATS down), a connection or OS error →
    UNAVAILABLE; timeouts → DEADLINE_EXCEEDED; anything else → INTERNAL "internal error",
    with the traceback logged but never sent.
    """

    def __init__(self, transient: Sequence[type[BaseException]] = ()) -> None:
        self._transient: Transient = tuple(transient)

    def guard_for(self, details: grpc.HandlerCallDetails) -> Guard:
        """Map the exceptions of every call."""
        method, transient = details.method, self._transient

        @asynccontextmanager
        async def map_errors(context: Context, request: Any) -> AsyncIterator[None]:
            try:
                yield
            except grpc.aio.AbortError:
                raise  # the servicer (or an inner interceptor) already chose the status
            except Exception as err:
                await context.abort_with_status(status_for_exception(err, method, transient))

        return map_errors
