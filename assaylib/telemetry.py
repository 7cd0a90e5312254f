"""Prometheus metrics and the RPC metrics interceptor shared by every service."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import grpc
import grpc.aio
import prometheus_client

from assaylib._handlers import Context, Guard, GuardingInterceptor

__all__ = [
    "RPC_DURATION",
    "RPC_REQUESTS",
    "RpcMetricsInterceptor",
    "split_method",
    "start_metrics_server",
]

RPC_REQUESTS = prometheus_client.Counter(
    "assay_rpc_requests",
    "gRPC calls served, by service, method and status code.",
    ["service", "method", "code"],
)
RPC_DURATION = prometheus_client.Histogram(
    "assay_rpc_duration_seconds",
    "Time to serve a gRPC call (a stream: until it ends).",
    ["service", "method"],
)


def start_metrics_server(addr: str) -> int | None:
    """Serve Prometheus ``/metrics`` on ``host:port`` (port 0 picks one); "" disables it.

    Returns the bound port, or None when disabled.
    """
    if not addr:
        return None
    host, _, port = addr.rpartition(":")
    server, _thread = prometheus_client.start_http_server(int(port), addr=host.strip("[]"))
    return int(server.server_port)


def split_method(full_method: str) -> tuple[str, str]:
    """``/pkg.Service/Method`` → ``("pkg.Service", "Method")``."""
    service, _, method = full_method.lstrip("/").rpartition("/")
    return service, method


def _code_name(code: object) -> str:
    if isinstance(code, grpc.StatusCode):
        return code.name
    if isinstance(code, int):
        for status in grpc.StatusCode:
            if status.value[0] == code:
                return status.name
    return "OK" if code is None else "UNKNOWN"


def _observer(full_method: str) -> Guard:
    service, method = split_method(full_method)

    @asynccontextmanager
    async def observe(context: Context, request: Any) -> AsyncIterator[None]:
        started = time.perf_counter()
        code = "UNKNOWN"
        try:
            yield
            code = _code_name(context.code())
        except grpc.aio.AbortError:
            code = _code_name(context.code())
            raise
        except (asyncio.CancelledError, GeneratorExit):
            code = "CANCELLED"
            raise
        finally:
            RPC_REQUESTS.labels(service, method, code).inc()
            RPC_DURATION.labels(service, method).observe(time.perf_counter() - started)

    return observe


class RpcMetricsInterceptor(GuardingInterceptor):
    """Counts calls by method and final status code and times them (outermost interceptor)."""

    def guard_for(self, details: grpc.HandlerCallDetails) -> Guard:
        """Measure every call."""
        return _observer(details.method)
