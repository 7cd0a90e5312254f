"""Prometheus metrics and the RPC metrics interceptor shared by every service."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import grpc
import grpc.aio
import prometheus_client

from assaylib._handlers import Context, Guard, GuardingInterceptor
from assaylib.version import VERSION

__all__ = [
    "BUILD_INFO",
    "EVENT_LOOP_LAG",
    "RPC_DURATION",
    "RPC_REQUESTS",
    "MethodMetrics",
    "RpcMetricsInterceptor",
    "code_name",
    "outcome_code",
    "sample_event_loop_lag",
    "split_method",
    "start_metrics_server",
]

BUILD_INFO = prometheus_client.Info(
    "assay_build",
    "The release this process runs (always 1): in a rolling update, which pods run which.",
)
BUILD_INFO.info({"version": VERSION})

RPC_REQUESTS = prometheus_client.Counter(
    "assay_rpc_requests",
    "gRPC calls served, by service, method and status code.",
    ["service", "method", "code"],
)
# Fine where the latency targets are (a submission's p99 ≤ 20 ms).
RPC_BUCKETS: tuple[float, ...] = (0.001, 0.0025, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.03, 0.05)
RPC_BUCKETS += (0.075, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
RPC_DURATION = prometheus_client.Histogram(
    "assay_rpc_duration_seconds",
    "Time to serve a gRPC call (a stream: until it ends).",
    ["service", "method"],
    buckets=RPC_BUCKETS,
)

EVENT_LOOP_LAG = prometheus_client.Histogram(
    "assay_event_loop_lag_seconds",
    "How late the event loop ran a timer that was due: the time ready work waits behind"
    " other callbacks (sampled every half second).",
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
)
LAG_INTERVAL = 0.5  # seconds between two samples of the event loop's lag


async def sample_event_loop_lag(
    interval: float = LAG_INTERVAL, observe: Callable[[float], None] = EVENT_LOOP_LAG.observe
) -> None:
    """Observe, until cancelled, how late each of a timer's wake-ups comes: a busy or
    blocked loop delays every call it serves by as much (``assay_event_loop_lag_seconds``)."""
    loop = asyncio.get_running_loop()
    while True:
        due = loop.time() + interval
        await asyncio.sleep(interval)
        observe(max(loop.time() - due, 0.0))


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


def code_name(code: object) -> str:
    """The name of a call's final status code (``context.code()``: None while it is OK)."""
    if isinstance(code, grpc.StatusCode):
        return code.name
    if isinstance(code, int):
        for status in grpc.StatusCode:
            if status.value[0] == code:
                return status.name
    return "OK" if code is None else "UNKNOWN"


def outcome_code(context: Context, error: BaseException | None) -> str:
    """The status code a call ended with, as its metrics count it: the context's when the
    call returned or aborted, CANCELLED when it was cancelled, UNKNOWN for anything else
    that escaped (the error mapping turns that into a status before it gets here)."""
    if error is None or isinstance(error, grpc.aio.AbortError):
        return code_name(context.code())
    if isinstance(error, asyncio.CancelledError | GeneratorExit):
        return "CANCELLED"
    return "UNKNOWN"


class MethodMetrics:
    """The call count and duration of one method, their label children bound once: a
    ``labels()`` lookup (a lock, a tuple, a dict) on every call cost more than the
    increment itself. Each child is made when its first call ends, as ``labels()`` did."""

    def __init__(self, full_method: str) -> None:
        self._service, self._method = split_method(full_method)
        self._counts: dict[str, Any] = {}
        self._duration: Any = None

    def finished(self, code: str, seconds: float) -> None:
        """Count one call that ended with ``code`` and took ``seconds``."""
        count = self._counts.get(code)
        if count is None:
            count = self._counts[code] = RPC_REQUESTS.labels(self._service, self._method, code)
        count.inc()
        if self._duration is None:
            self._duration = RPC_DURATION.labels(self._service, self._method)
        self._duration.observe(seconds)


def _observer(full_method: str) -> Guard:
    metrics = MethodMetrics(full_method)

    @asynccontextmanager
    async def observe(context: Context, request: Any) -> AsyncIterator[None]:
        started = time.perf_counter()
        error: BaseException | None = None
        try:
            yield
        except BaseException as err:
            error = err
            raise
        finally:
            metrics.finished(outcome_code(context, error), time.perf_counter() - started)

    return observe


class RpcMetricsInterceptor(GuardingInterceptor):
    """Counts calls by method and final status code and times them (outermost interceptor)."""

    def guard_for(self, details: grpc.HandlerCallDetails) -> Guard:
        """Measure every call."""
        return _observer(details.method)
