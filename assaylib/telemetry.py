"""Logging, Prometheus metrics and the RPC metrics interceptor shared by every service."""

from __future__ import annotations

import asyncio
import logging
import sys
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
    "KeyValueFormatter",
    "RpcMetricsInterceptor",
    "configure_logging",
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

# Attributes every LogRecord has; anything else on a record came from ``extra=``.
_STANDARD_ATTRS = frozenset(vars(logging.makeLogRecord({}))) | {"message", "asctime", "taskName"}


class KeyValueFormatter(logging.Formatter):
    """One line per record: time, level, service, logger, message, then extras as key=value."""

    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service

    def format(self, record: logging.LogRecord) -> str:
        """Render ``record`` on one line (a traceback follows on its own lines)."""
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        line = (
            f"{stamp}.{int(record.msecs):03d}Z {record.levelname} {self.service} "
            f"{record.name}: {record.getMessage()}"
        )
        extras = [
            f"{key}={_quote(value)}"
            for key, value in vars(record).items()
            if key not in _STANDARD_ATTRS and not key.startswith("_")
        ]
        if extras:
            line += " " + " ".join(extras)
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


def _quote(value: object) -> str:
    text = str(value)
    if not text or any(c.isspace() or c in '"=' for c in text):
        return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'
    return text


def configure_logging(service: str, level: str = "INFO") -> None:
    """Send every log record to stderr through a KeyValueFormatter; safe to call again."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        if getattr(handler, "_assay", False):
            root.removeHandler(handler)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(KeyValueFormatter(service))
    handler._assay = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(level.upper())


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
