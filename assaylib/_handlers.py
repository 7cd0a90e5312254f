"""Wrap a gRPC method handler's behaviour in an async context manager (a "guard").

Server interceptors in grpc.aio run ``intercept_service`` outside the RPC's own task, so
anything that must happen *inside* the call — setting a ContextVar, catching the servicer's
exceptions, timing it — wraps the behaviour function instead. The guard is entered around
the whole call: the await of a unary response, or the full iteration of a response stream.
"""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from typing import Any

import grpc
import grpc.aio

Context = grpc.aio.ServicerContext[Any, Any]
Guard = Callable[[Context], AbstractAsyncContextManager[None]]
_Behaviour = Callable[..., Any]


def wrap_handler(
    handler: grpc.RpcMethodHandler[Any, Any], guard: Guard
) -> grpc.RpcMethodHandler[Any, Any]:
    """Return a copy of ``handler`` whose behaviour runs inside ``guard(context)``."""
    deserializer = handler.request_deserializer
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
        async with guard(context):
            response = behaviour(request, context)
            if inspect.isawaitable(response):
                response = await response
            return response

    return unary


def _wrap_stream(behaviour: _Behaviour, guard: Guard) -> Any:
    if inspect.iscoroutinefunction(behaviour):
        # A coroutine stream handler writes with context.write() and returns None.
        async def writer(request: Any, context: Context) -> None:
            async with guard(context):
                await behaviour(request, context)

        return writer

    async def responses(request: Any, context: Context) -> AsyncIterator[Any]:
        async with guard(context):
            produced = behaviour(request, context)
            if inspect.isasyncgen(produced):
                async for response in produced:
                    yield response
            else:
                for response in produced:
                    yield response

    return responses


class GuardingInterceptor(grpc.aio.ServerInterceptor):
    """A server interceptor that runs each call inside the guard ``guard_for`` returns for
    it (``None``: the call runs as it is)."""

    def guard_for(self, details: grpc.HandlerCallDetails) -> Guard | None:
        """The guard for one call; subclasses decide."""
        raise NotImplementedError

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
        guard = self.guard_for(handler_call_details)
        return handler if guard is None else wrap_handler(handler, guard)
