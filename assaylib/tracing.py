"""OpenTelemetry tracing shared by every service: one trace per job across the mesh.

Off by default. ``OTEL_TRACES_EXPORTER=otlp`` (the OTLP/gRPC exporter, configured by the
standard ``OTEL_EXPORTER_OTLP_*`` variables) or ``console`` turns it on; ``OTEL_SERVICE_NAME``
and ``OTEL_RESOURCE_ATTRIBUTES`` name the process; new traces are sampled at
``ASSAY_TRACE_SAMPLE_RATIO`` (or by ``OTEL_TRACES_SAMPLER`` when set), and a trace begun
upstream keeps its caller's decision (parent-based).

How the context travels: gRPC metadata (the grpc instrumentation's interceptors), a
``traceparent`` field on the items of batch RPCs (a batch carries many jobs' traces), the
job's row (``jobs.trace_context``, written with the job), and the ``traceparent`` header of
every message the relay publishes. When tracing is off nothing is injected, no interceptor is
installed and the tracer is a no-op, so it costs nothing.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
from collections.abc import Iterator, Mapping, Sequence

import grpc.aio
from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.context import Context
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter
from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased
from opentelemetry.trace import Span, SpanKind, Tracer

__all__ = [
    "EXPORTERS",
    "client_interceptors",
    "configure_tracing",
    "context_of",
    "enabled",
    "inject",
    "install",
    "item_span",
    "ratio_sampler",
    "server_interceptors",
    "span",
    "traceparent",
    "tracer",
    "uninstall",
    "well_formed",
]

log = logging.getLogger(__name__)

EXPORTERS = ("otlp", "console")
TRACEPARENT = re.compile(r"[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}")
EXEMPT_SERVICES = ("grpc.health.v1.Health", "grpc.reflection.v1alpha.ServerReflection")
# A watch lasts as long as its subscriber (hours): its deliveries are traced, one by one, in
# the traces of their jobs instead. (The instrumentation also expects a server-streaming
# handler to be an async generator; WatchJobs writes through its context.)
EXEMPT_METHODS = ("/assay.notifier.v1.NotifierService/WatchJobs",)
_NOOP = trace.NoOpTracer()


class _State:
    provider: TracerProvider | None = None
    tracers: dict[str, Tracer] = {}  # noqa: RUF012 - the process's one cache


def enabled() -> bool:
    """Whether this process records traces."""
    return _State.provider is not None


def tracer(name: str) -> Tracer:
    """The tracer for ``name`` (a module), a no-op one when tracing is off."""
    provider = _State.provider
    if provider is None:
        return _NOOP
    found = _State.tracers.get(name)
    if found is None:  # a Tracer per module, made once (get_tracer builds a new one each call)
        found = _State.tracers[name] = provider.get_tracer(name)
    return found


def configure_tracing(service: str, sample_ratio: float) -> bool:
    """Turn tracing on from the standard ``OTEL_*`` environment; False when it stays off."""
    exporter_name = os.environ.get("OTEL_TRACES_EXPORTER", "none").strip().lower()
    if os.environ.get("OTEL_SDK_DISABLED", "").lower() == "true" or exporter_name == "none":
        return False
    if exporter_name not in EXPORTERS:
        log.warning(
            "OTEL_TRACES_EXPORTER=%s is not one of %s: tracing off", exporter_name, EXPORTERS
        )
        return False
    if exporter_name == "otlp":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        processor: SpanProcessor = BatchSpanProcessor(OTLPSpanExporter())
    else:
        processor = BatchSpanProcessor(ConsoleSpanExporter())
    sampler = None if os.environ.get("OTEL_TRACES_SAMPLER") else ratio_sampler(sample_ratio)
    install(service, [processor], sampler=sampler)
    log.info("tracing on: %s exporter, new traces sampled at %g", exporter_name, sample_ratio)
    return True


def ratio_sampler(ratio: float) -> ParentBased:
    """Record ``ratio`` of the traces begun here (0: none) and every trace a caller began and
    recorded."""
    return ParentBased(TraceIdRatioBased(ratio))


def install(
    service: str,
    processors: Sequence[SpanProcessor],
    *,
    sampler: ParentBased | None = None,
) -> TracerProvider:
    """Record traces through ``processors`` (tests pass an in-memory exporter's)."""
    resource = Resource.create({"service.name": f"assay-{service}"})
    provider = TracerProvider(resource=resource, sampler=sampler or ratio_sampler(1.0))
    for processor in processors:
        provider.add_span_processor(processor)
    _State.provider, _State.tracers = provider, {}
    return provider


def uninstall() -> None:
    """Flush and stop recording (a stopping process; tests)."""
    provider, _State.provider, _State.tracers = _State.provider, None, {}
    if provider is not None:
        provider.shutdown()


def server_interceptors() -> list[grpc.aio.ServerInterceptor]:
    """The interceptor that opens a span per served call (outermost), or none when off."""
    if _State.provider is None:
        return []
    from opentelemetry.instrumentation.grpc import aio_server_interceptor

    return [aio_server_interceptor(_State.provider, filter_=_traced)]  # type: ignore[no-untyped-call]


_EXEMPT_PREFIXES = tuple(f"/{service}/" for service in EXEMPT_SERVICES)


def _traced(details: grpc.HandlerCallDetails) -> bool:
    # Runs on every served call: a tuple test instead of the instrumentation's composed
    # filters (any_of/negate over one closure per name cost 1-2 % of a service's CPU).
    method = details.method
    return method not in EXEMPT_METHODS and not method.startswith(_EXEMPT_PREFIXES)


def client_interceptors() -> list[grpc.aio.ClientInterceptor]:
    """Interceptors that open a span per call and send the context in its metadata."""
    if _State.provider is None:
        return []
    from opentelemetry.instrumentation.grpc import aio_client_interceptors

    return list(aio_client_interceptors(_State.provider))  # type: ignore[no-untyped-call]


def well_formed(value: str) -> str:
    """``value`` when it is a W3C traceparent, else "" (a malformed one is dropped, never
    stored or passed on)."""
    return value if TRACEPARENT.fullmatch(value) else ""


def _unsampled(context: Context | None) -> bool:
    """Whether ``context`` (the current one when None) is in a trace its root chose not to
    record: spans here would be dropped by the parent-based sampler anyway, so the context is
    only passed on."""
    above = trace.get_current_span(context).get_span_context()
    return above.is_valid and not above.trace_flags.sampled


def item_span(
    name: str, module: str, parent: str, attributes: Mapping[str, str | int] | None = None
) -> tuple[Span, str]:
    """A span for one item of a batch, not made current: the child of the item's own trace
    (``parent``, a traceparent), else of the current span. Returns it (end it when the item is
    done) and the traceparent to hand on: the span's own, or, when tracing is off here, the
    item's (well-formed) one, so the trace still reaches the next service."""
    if _State.provider is None:
        return trace.INVALID_SPAN, well_formed(parent)
    context = context_of(well_formed(parent))
    if _unsampled(context):
        return trace.INVALID_SPAN, traceparent(context)
    started = tracer(module).start_span(name, context=context, attributes=attributes)
    return started, traceparent(trace.set_span_in_context(started))


def inject(carrier: dict[str, str], context: Context | None = None) -> None:
    """Write the current (or given) trace context into ``carrier`` (headers, metadata)."""
    if _State.provider is not None:
        propagate.inject(carrier, context=context)


def traceparent(context: Context | None = None) -> str:
    """The W3C traceparent of the current (or given) context, or "" when tracing is off."""
    if _State.provider is None:  # off: called once per submission, so not even a dict
        return ""
    carrier: dict[str, str] = {}
    inject(carrier, context)
    return carrier.get("traceparent", "")


def context_of(value: str | Mapping[str, str] | None) -> Context | None:
    """The context a traceparent (or a carrier of headers) names; None if it names none."""
    if not value:
        return None
    carrier = {"traceparent": value} if isinstance(value, str) else dict(value)
    found = propagate.extract(carrier)
    return found if trace.get_current_span(found).get_span_context().is_valid else None


class _Untraced(contextlib.AbstractContextManager[Span]):
    """``span()`` in a process that does not trace: one reusable context that does nothing
    (a generator's context manager per span cost a worker a few µs per job each)."""

    def __enter__(self) -> Span:
        return trace.INVALID_SPAN

    def __exit__(self, *exc_info: object) -> None:
        return None


_UNTRACED = _Untraced()


def span(
    name: str,
    module: str,
    *,
    parent: str | Mapping[str, str] | Context | None = None,
    kind: SpanKind = SpanKind.INTERNAL,
    attributes: Mapping[str, str | int] | None = None,
) -> contextlib.AbstractContextManager[Span]:
    """A span made current for the block: a child of ``parent`` (a traceparent, headers or
    a context) when it names one, else of the current span."""
    if _State.provider is None:  # off: not even a no-op span's context switch
        return _UNTRACED
    return _recorded(name, module, parent, kind, attributes)


@contextlib.contextmanager
def _recorded(
    name: str,
    module: str,
    parent: str | Mapping[str, str] | Context | None,
    kind: SpanKind,
    attributes: Mapping[str, str | int] | None,
) -> Iterator[Span]:
    context = parent if isinstance(parent, Context) else context_of(parent)
    if _unsampled(context):
        # The trace's root chose not to record it: pass its context on (so the spans below
        # know it too) without the cost of a span that would be dropped.
        token = otel_context.attach(context) if context is not None else None
        try:
            yield trace.INVALID_SPAN
        finally:
            if token is not None:
                otel_context.detach(token)
        return
    with tracer(module).start_as_current_span(
        name, context=context, kind=kind, attributes=attributes
    ) as current:
        yield current
