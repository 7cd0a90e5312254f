"""An OTLP/gRPC trace receiver that counts what it is sent and keeps nothing: the exporter's
far end when the bench measures what tracing costs (``--trace-sample``)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent import futures
from contextlib import contextmanager
from typing import Any

import grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2 as pb
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2_grpc as pb_grpc


class OtlpSink(pb_grpc.TraceServiceServicer):
    """Counts spans and distinct traces, per service name."""

    def __init__(self) -> None:
        self.spans: dict[str, int] = {}
        self.traces: set[bytes] = set()
        self._lock = threading.Lock()

    def Export(self, request: pb.ExportTraceServiceRequest, context: Any) -> Any:
        """Count one export's spans."""
        with self._lock:
            for resource in request.resource_spans:
                service = next(
                    (
                        a.value.string_value
                        for a in resource.resource.attributes
                        if a.key == "service.name"
                    ),
                    "?",
                )
                for scope in resource.scope_spans:
                    self.spans[service] = self.spans.get(service, 0) + len(scope.spans)
                    self.traces.update(span.trace_id for span in scope.spans)
        return pb.ExportTraceServiceResponse()

    def report(self) -> dict[str, Any]:
        """Spans per service and distinct traces received."""
        with self._lock:
            return {"spans": dict(sorted(self.spans.items())), "traces": len(self.traces)}


@contextmanager
def running_sink() -> Iterator[tuple[OtlpSink, int]]:
    """A sink on a free local port: (sink, port)."""
    sink = OtlpSink()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    pb_grpc.add_TraceServiceServicer_to_server(sink, server)  # type: ignore[no-untyped-call]
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield sink, port
    finally:
        server.stop(grace=2).wait()
