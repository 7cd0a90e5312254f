"""Wrap a gRPC method handler's behaviour in an async context manager (a "guard").

Server interceptors in grpc.aio run ``intercept_service`` outside the RPC's own task, so
anything that must happen *inside* the call — setting a ContextVar, catching the servicer's
exceptions, timing it — wraps the behaviour function instead. The guard is entered around
the whole call: the await of a unary response, or the full iteration of a response stream.
"""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from typing import Any, TypeAlias

import grpc
import grpc.aio

from assaylib import errors

Context = grpc.aio.ServicerContext[Any, Any]
Guard = Callable[[Context, Any], AbstractAsyncContextManager[None]]
"""Builds the context manager one call runs in, from its context and its request."""
_Behaviour = Callable[..., Any]
Handler: TypeAlias = "grpc.RpcMethodHandler[Any, Any]"


def wrap_handler(
    handler: grpc.RpcMethodHandler[Any, Any],
    guard: Guard,
    deserializer: Callable[[bytes], Any] | None = None,
) -> grpc.RpcMethodHandler[Any, Any]:
    """Return a copy of ``handler`` whose behaviour runs inside ``guard(context, request)``
    (and whose request deserializer is ``deserializer``, when given)."""
    deserializer = deserializer or handler.request_deserializer
    serializer = handler.response_serializer
    if handler.unary_unary is not None:
        return grpc.unary_unary_rpc_method_handler(
            _wrap_unary(handler.unary_unary, guard), deserializer, serializer
        )
    if handler.unary_stream is not None:
        return grpc.unary_stream_rpc_method_handler(
            _wrap_stream(handler.unary_stream, guard), deserializer, serializer
        )
    if handler.stream_unary is not None:
        return grpc.stream_unary_rpc_method_handler(
            _wrap_unary(handler.stream_unary, guard), deserializer, serializer
        )
    if handler.stream_stream is not None:
        return grpc.stream_stream_rpc_method_handler(
            _wrap_stream(handler.stream_stream, guard), deserializer, serializer
        )
    return handler


def _wrap_unary(behaviour: _Behaviour, guard: Guard) -> Any:
    async def unary(request: Any, context: Context) -> Any:
        async with guard(context, request):
            response = behaviour(request, context)
            if inspect.isawaitable(response):
                response = await response
            return response

    return unary


def _wrap_stream(behaviour: _Behaviour, guard: Guard) -> Any:
    if inspect.iscoroutinefunction(behaviour):
        # A coroutine stream handler writes with context.write() and returns None.
        async def writer(request: Any, context: Context) -> None:
            async with guard(context, request):
                await behaviour(request, context)

        return writer

    async def responses(request: Any, context: Context) -> AsyncIterator[Any]:
        async with guard(context, request):
            produced = behaviour(request, context)
            if inspect.isasyncgen(produced):
                async for response in produced:
                    yield response
            else:
                for response in produced:
                    yield response

    return responses


@dataclass(frozen=True)
class Undecodable:
    """What a tolerant deserializer returns for bytes that are not the request message: the
    call goes on (authentication first), and the decode guard refuses it."""

    error: str


def tolerant(deserializer: Callable[[bytes], Any] | None) -> Callable[[bytes], Any] | None:
    """``deserializer``, returning Undecodable instead of raising (grpc would answer UNKNOWN
    before any interceptor runs)."""
    if deserializer is None:
        return None

    def deserialize(data: bytes) -> Any:
        try:
            return deserializer(data)
        except Exception as err:  # DecodeError: bad bytes, invalid UTF-8, nesting too deep
            return Undecodable(f"{type(err).__name__}: {err}")

    return deserialize


def undecodable_error(request: Undecodable) -> errors.InvalidArgument:
    """The error a request that did not decode is refused with."""
    violation = errors.FieldViolation("request", f"not a valid message ({request.error})")
    return errors.InvalidArgument([violation])


@asynccontextmanager
async def _refuse_undecodable(context: Context, request: Any) -> AsyncIterator[None]:
    if isinstance(request, Undecodable):
        raise undecodable_error(request)
    yield


class GuardingInterceptor(grpc.aio.ServerInterceptor):
    """A server interceptor that runs each call inside the guard ``guard_for`` returns for
    its method (``None``: the call runs as it is). A guard depends on the method only (it
    reads the call's metadata from the context), so each method's wrapped handler is built
    once and reused by every call."""

    def guard_for(self, details: grpc.HandlerCallDetails) -> Guard | None:
        """The guard for a method's calls; subclasses decide."""
        raise NotImplementedError

    def wrap(self, details: grpc.HandlerCallDetails, handler: Handler) -> Handler:
        """The handler every call of this method gets (built once per method)."""
        guard = self.guard_for(details)
        return handler if guard is None else wrap_handler(handler, guard)

    def _wrapped(self, details: grpc.HandlerCallDetails, handler: Handler) -> Handler:
        cache: dict[str, tuple[Handler, Handler]] = self.__dict__.setdefault(
            "_wrapped_handlers", {}
        )
        known = cache.get(details.method)
        if known is not None and known[0] is handler:
            return known[1]
        wrapped = self.wrap(details, handler)
        cache[details.method] = (handler, wrapped)
        return wrapped

    async def intercept_service(
        self,
        continuation: Callable[
            [grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any] | None]
        ],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        """Wrap the method's handler so the guard runs inside the call."""
        handler = await continuation(handler_call_details)
        if handler is None:
            return None
        return self._wrapped(handler_call_details, handler)


class DecodeGuardInterceptor(GuardingInterceptor):
    """The innermost interceptor: a request body that does not decode is INVALID_ARGUMENT
    on ``request``, raised inside the call (after authentication, through the error mapping)
    instead of grpc's UNKNOWN "Unexpected error" before any interceptor runs."""

    def wrap(self, details: grpc.HandlerCallDetails, handler: Handler) -> Handler:
        """Make the deserializer tolerant and the call refuse what it could not read."""
        if handler.request_streaming:
            return handler
        deserializer = tolerant(handler.request_deserializer)
        return wrap_handler(handler, _refuse_undecodable, deserializer)
