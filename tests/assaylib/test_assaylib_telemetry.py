"""Log formatting and the Prometheus endpoint."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import sys
import time
import urllib.request
from collections.abc import Iterator

import grpc
import grpc.aio
import pytest
from opentelemetry.sdk.trace import TracerProvider

from assaylib import telemetry
from assaylib.logs import JsonFormatter, TextFormatter, configure_logging
from assaylib.telemetry import split_method, start_metrics_server


@pytest.fixture
def restore_root_logger() -> Iterator[logging.Logger]:
    """Undo configure_logging's changes to the root logger after the test."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield root
    root.handlers[:] = handlers
    root.setLevel(level)


def test_configure_logging_is_idempotent_and_one_line(
    restore_root_logger: logging.Logger, monkeypatch: pytest.MonkeyPatch
) -> None:
    stream = io.StringIO()
    monkeypatch.setattr(sys, "stderr", stream)
    configure_logging("worker", "debug", "text")
    configure_logging("worker", "DEBUG", "text")
    ours = [h for h in restore_root_logger.handlers if getattr(h, "_assay", False)]
    assert len(ours) == 1
    logging.getLogger("worker.loop").info(
        "job started", extra={"job_id": "j-1", "attempt": 2, "worker_id": "w 1"}
    )
    line = stream.getvalue()
    assert line.count("\n") == 1
    assert " INFO worker worker.loop: job started " in line
    assert 'job_id=j-1 attempt=2 worker_id="w 1"' in line
    assert line[:4].isdigit() and "Z " in line


def test_json_lines_carry_the_job_and_the_trace(
    restore_root_logger: logging.Logger, monkeypatch: pytest.MonkeyPatch
) -> None:
    stream = io.StringIO()
    monkeypatch.setattr(sys, "stderr", stream)  # not a terminal: JSON by default
    configure_logging("archive", "INFO")
    provider = TracerProvider()
    with provider.get_tracer("test").start_as_current_span("transition") as span:
        logging.getLogger("archive_svc.lifecycle").info(
            "job %s started", "j-1", extra={"job_id": "j-1", "user_id": "u 1", "attempt": 1}
        )
    try:
        raise ValueError("boom")
    except ValueError:
        logging.getLogger("archive_svc").exception("failed")
    first, second = (json.loads(line) for line in stream.getvalue().splitlines())
    context = span.get_span_context()
    assert first == {
        "time": first["time"],
        "level": "INFO",
        "service": "archive",
        "logger": "archive_svc.lifecycle",
        "message": "job j-1 started",
        "job_id": "j-1",
        "user_id": "u 1",
        "attempt": 1,
        "trace_id": f"{context.trace_id:032x}",
        "span_id": f"{context.span_id:016x}",
    }
    assert first["time"].endswith("Z") and "trace_id" not in second
    assert second["level"] == "ERROR" and "ValueError: boom" in second["exception"]


def test_split_method() -> None:
    assert split_method("/assay.archive.v1.ArchiveService/StartJob") == (
        "assay.archive.v1.ArchiveService",
        "StartJob",
    )


def test_metrics_server_disabled_when_empty() -> None:
    assert start_metrics_server("") is None


async def test_metrics_server_serves_rpc_metrics() -> None:
    port = start_metrics_server("127.0.0.1:0")
    assert port
    telemetry.RPC_REQUESTS.labels("assaytest.Telemetry", "Ping", "OK").inc()
    telemetry.RPC_DURATION.labels("assaytest.Telemetry", "Ping").observe(0.01)

    def scrape() -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as reply:
            body: bytes = reply.read()
        return body.decode()

    body = await asyncio.to_thread(scrape)
    assert 'assay_rpc_requests_total{code="OK",method="Ping",service="assaytest.Telemetry"}' in body
    assert "assay_rpc_duration_seconds_bucket" in body


def block(seconds: float) -> None:
    """Hold the calling thread (here: the event loop) for ``seconds``."""
    time.sleep(seconds)


async def test_event_loop_lag_measures_a_blocked_loop() -> None:
    lags: asyncio.Queue[float] = asyncio.Queue()
    sampler = asyncio.create_task(telemetry.sample_event_loop_lag(0.01, lags.put_nowait))
    try:
        await asyncio.sleep(0)  # the sampler's timer is armed
        block(0.08)  # the timer due in 10 ms fires about 70 ms late
        async with asyncio.timeout(5):
            late = await lags.get()
            calm = await lags.get()
    finally:
        sampler.cancel()
    assert late >= 0.05  # the blocked time shows, not just a timer's jitter
    assert calm < late


@pytest.mark.parametrize("form", ["json", "text"])
def test_caller_strings_are_cut_with_their_length(form: str) -> None:
    formatter = JsonFormatter("archive") if form == "json" else TextFormatter("archive")
    big = "r" * 1_000_000
    try:
        raise ValueError(f"bad request id {big}")
    except ValueError:
        failure = sys.exc_info()
    records = [
        logging.makeLogRecord(
            {"msg": "refused %s after %d tries", "args": (big, 3), "levelname": "INFO"}
        ),
        logging.makeLogRecord({"msg": "refused %(id)s", "args": {"id": big}}),
        logging.makeLogRecord({"msg": "refused", "job_id": big, "user_id": ["u" * 5000]}),
        logging.makeLogRecord({"msg": f"formatted by the caller {big}"}),
        logging.makeLogRecord({"msg": "failed", "exc_info": failure}),
    ]
    for record in records:
        text = formatter.format(record)
        assert max(len(line) for line in text.splitlines()) < 2048, text[:200]
        assert "…[" in text, text[:200]
    first = formatter.format(records[0])
    assert "after 3 tries" in first and f"…[{len(big)} chars]" in first
    short = formatter.format(logging.makeLogRecord({"msg": "job %s", "args": ("j-1",)}))
    assert "job j-1" in short and "…" not in short


def test_outcome_code_is_one_mapping_for_unary_calls_and_streams() -> None:
    class Ended:
        def __init__(self, code: grpc.StatusCode | None) -> None:
            self._code = code

        def code(self) -> grpc.StatusCode | None:
            return self._code

    ok, denied = Ended(None), Ended(grpc.StatusCode.PERMISSION_DENIED)
    assert telemetry.outcome_code(ok, None) == "OK"  # type: ignore[arg-type]
    assert telemetry.outcome_code(denied, grpc.aio.AbortError()) == "PERMISSION_DENIED"  # type: ignore[arg-type]
    assert telemetry.outcome_code(ok, asyncio.CancelledError()) == "CANCELLED"  # type: ignore[arg-type]
    assert telemetry.outcome_code(ok, GeneratorExit()) == "CANCELLED"  # type: ignore[arg-type]
    assert telemetry.outcome_code(ok, RuntimeError()) == "UNKNOWN"  # type: ignore[arg-type]
