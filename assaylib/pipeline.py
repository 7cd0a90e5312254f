"""The server side of every call, one interceptor: metrics, error mapping, authentication and
the decode guard (``create_server``'s stack, outermost first).

Each of the four is an interceptor of its own (``RpcMetricsInterceptor``,
``ErrorMappingInterceptor``, ``AuthInterceptor``, ``DecodeGuardInterceptor``). Stacked, a
unary call went through four ``intercept_service`` hops and four async context managers;
here a unary-unary call (every RPC but the streams), and a unary-stream call whose servicer
writes with ``context.write``, runs in one coroutine doing the same steps in the same order;
another streaming call gets the four guards composed as before.
"""

from __future__ import annotations

import inspect
import time
from collections.abc import Sequence
from typing import Any

import grpc
import grpc.aio

from assaylib._handlers import (
    Context,
    GuardingInterceptor,
    Handler,
    Undecodable,
    tolerant,
    undecodable_error,
)
from assaylib._handlers import DecodeGuardInterceptor as _DecodeGuard
from assaylib.auth import AuthInterceptor, act_as, stop_acting
from assaylib.error_mapping import ErrorMappingInterceptor, status_for_exception
from assaylib.telemetry import MethodMetrics, RpcMetricsInterceptor, outcome_code

__all__ = ["ServerPipeline"]


class ServerPipeline(GuardingInterceptor):
    """Metrics, error mapping, authentication (``auth``; its exempt methods skip it) and the
    decode guard, as the four interceptors stacked in that order would do them."""

    def __init__(
        self, auth: AuthInterceptor, transient: Sequence[type[BaseException]] = ()
    ) -> None:
        self._auth = auth
        self._transient = tuple(transient)
        self._layers: tuple[GuardingInterceptor, ...] = (
            RpcMetricsInterceptor(),
            ErrorMappingInterceptor(transient),
            auth,
            _DecodeGuard(),
        )

    def wrap(self, details: grpc.HandlerCallDetails, handler: Handler) -> Handler:
        """One coroutine for a unary-unary method and for a unary-stream one that writes
        with ``context.write`` (WatchJobs: every open watch holds its call's frames, so one
        coroutine instead of four guards' frames and context managers is memory per watch);
        the four guards for the other streaming ones."""
        method = details.method
        auth = None if self._auth.exempts(method) else self._auth
        deserializer = tolerant(handler.request_deserializer)
        if handler.unary_unary is not None:
            unary = _fused_unary(handler.unary_unary, method, self._transient, auth)
            return grpc.unary_unary_rpc_method_handler(
                unary, deserializer, handler.response_serializer
            )
        if handler.unary_stream is not None and inspect.iscoroutinefunction(handler.unary_stream):
            writer = _fused_unary(handler.unary_stream, method, self._transient, auth)
            return grpc.unary_stream_rpc_method_handler(
                writer, deserializer, handler.response_serializer
            )
        for layer in reversed(self._layers):  # innermost first, as grpc chains them
            handler = layer.wrap(details, handler)
        return handler


def _fused_unary(
    behaviour: Any,
    method: str,
    transient: tuple[type[BaseException], ...],
    auth: AuthInterceptor | None,
) -> Any:
    metrics = MethodMetrics(method)

    async def guarded(request: Any, context: Context) -> Any:
        """Error mapping around authentication around the decode guard and the servicer."""
        try:
            token = None if auth is None else act_as(await auth.caller_of(context, method))
            try:
                if isinstance(request, Undecodable):
                    raise undecodable_error(request)
                response = behaviour(request, context)
                if inspect.isawaitable(response):
                    response = await response
                return response
            finally:
                if token is not None:
                    stop_acting(token)
        except grpc.aio.AbortError:
            raise  # the servicer (or authentication) already chose the status
        except Exception as err:
            await context.abort_with_status(status_for_exception(err, method, transient))

    async def unary(request: Any, context: Context) -> Any:
        started = time.perf_counter()
        error: BaseException | None = None
        try:
            return await guarded(request, context)
        except BaseException as err:
            error = err
            raise
        finally:
            metrics.finished(outcome_code(context, error), time.perf_counter() - started)

    return unary
