"""Distributed tracing, optional: OpenTelemetry when configured, a free no-op otherwise.

Enabled when `HOOKYARD_OTEL_ENDPOINT` is set and the `hookyard[otel]` extra is installed;
nothing imports opentelemetry before that. The trace of one delivery:

  API span `POST /hooks/{endpoint_id}` (child of the sender's `traceparent`, if any)
    -> its context stored with the event (`verification.traceparent`)
  dispatcher span `hookyard.handover` (child of the first event's stored context, links to the others)
    -> Temporal's `SignalWithStartWorkflow` span, propagated in Temporal headers by `TracingInterceptor`
  worker: `RunWorkflow` / `StartActivity` / `RunActivity` spans of the lane; one `hookyard.action` span per
  attempt, a child of its event's stored context (a lane's batch mixes events) linked to `RunActivity`.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SpanExporter
    from opentelemetry.trace import Span
    from temporalio.client import Client

log = logging.getLogger(__name__)

TRACEPARENT = "traceparent"
Attributes = Mapping[str, str | int | float | bool]
_MAX_LINKS = 32  # a hand-over batch may carry hundreds of events; links beyond this add little


class SpanHandle(Protocol):
    """What code inside a span may tell it."""

    def set_status_code(self, status: int) -> None:
        """Record the HTTP status answered; 5xx marks the span as an error."""

    def set_attribute(self, key: str, value: str | int | float | bool) -> None:
        """Attach one attribute."""


class _NoSpan:
    def set_status_code(self, status: int) -> None:
        pass

    def set_attribute(self, key: str, value: str | int | float | bool) -> None:
        pass


_NO_SPAN = _NoSpan()
_NULL: AbstractContextManager[SpanHandle] = nullcontext(_NO_SPAN)


class Tracing:
    """Tracing switched off: every method is a near-free no-op. The enabled variant subclasses it."""

    enabled = False

    def server_span(self, name: str, headers: Mapping[str, str]) -> AbstractContextManager[SpanHandle]:
        """A span for one incoming request, continuing the caller's `traceparent` header if present."""
        return _NULL

    def span(self, name: str, attributes: Attributes | None = None) -> AbstractContextManager[SpanHandle]:
        """A child of the current span."""
        return _NULL

    def continued_span(
        self, name: str, traceparents: Sequence[str | None], attributes: Attributes | None = None
    ) -> AbstractContextManager[SpanHandle]:
        """A span continuing stored traces: child of the first, linked to the rest."""
        return _NULL

    def stored_span(
        self, name: str, traceparent: str | None, attributes: Attributes | None = None
    ) -> AbstractContextManager[SpanHandle]:
        """A span continuing one stored trace, linked to the current span. A batch of a lane
        carries executions of many events: each attempt belongs to its own event's trace, and
        the link keeps the way to the batch's activity."""
        return _NULL

    def traceparent(self) -> str | None:
        """The current span as a W3C `traceparent` value, to store with what it produced."""
        return None

    def instrument_client(self, client: Client) -> Client:
        """The Temporal client to use: with the tracing interceptor when enabled."""
        return client

    def flush(self) -> None:
        """Export what has been recorded so far (before a process may be ended by a signal)."""

    def shutdown(self) -> None:
        """Flush and stop exporting."""


NOOP = Tracing()


class _OtelSpan:
    __slots__ = ("_span",)

    def __init__(self, span: Span) -> None:
        self._span = span

    def set_status_code(self, status: int) -> None:
        from opentelemetry.trace import Status, StatusCode

        self._span.set_attribute("http.response.status_code", status)
        if status >= 500:
            self._span.set_status(Status(StatusCode.ERROR))

    def set_attribute(self, key: str, value: str | int | float | bool) -> None:
        self._span.set_attribute(key, value)


class OtelTracing(Tracing):
    """Tracing through an OpenTelemetry tracer provider of its own (the global one is left alone)."""

    enabled = True

    def __init__(self, provider: TracerProvider) -> None:
        from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

        self._provider = provider
        self._tracer = provider.get_tracer("hookyard")
        self._propagator = TraceContextTextMapPropagator()

    @contextmanager
    def _span(
        self, name: str, kind: Any, context: Any, attributes: Attributes | None, links: Any = None
    ) -> Iterator[SpanHandle]:
        with self._tracer.start_as_current_span(
            name,
            context=context,
            kind=kind,
            attributes=attributes,
            links=links,
            # Client errors are answers, not failures; callers set the status they mean.
            record_exception=False,
            set_status_on_exception=False,
        ) as span:
            try:
                yield _OtelSpan(span)
            except BaseException as exc:
                span.set_attribute("error.type", type(exc).__name__)
                raise

    def server_span(self, name: str, headers: Mapping[str, str]) -> AbstractContextManager[SpanHandle]:
        from opentelemetry.trace import SpanKind

        parent = self._propagator.extract(headers) if TRACEPARENT in headers else None
        return self._span(name, SpanKind.SERVER, parent, None)

    def span(self, name: str, attributes: Attributes | None = None) -> AbstractContextManager[SpanHandle]:
        from opentelemetry.trace import SpanKind

        return self._span(name, SpanKind.INTERNAL, None, attributes)

    def continued_span(
        self, name: str, traceparents: Sequence[str | None], attributes: Attributes | None = None
    ) -> AbstractContextManager[SpanHandle]:
        from opentelemetry.trace import Link, SpanKind, get_current_span

        contexts = [self._propagator.extract({TRACEPARENT: tp}) for tp in dict.fromkeys(traceparents) if tp]
        parents = [c for c in contexts if get_current_span(c).get_span_context().is_valid]
        links = [Link(get_current_span(c).get_span_context()) for c in parents[1 : 1 + _MAX_LINKS]]
        return self._span(name, SpanKind.PRODUCER, parents[0] if parents else None, attributes, links)

    def stored_span(
        self, name: str, traceparent: str | None, attributes: Attributes | None = None
    ) -> AbstractContextManager[SpanHandle]:
        from opentelemetry.trace import Link, SpanKind, get_current_span

        current = get_current_span().get_span_context()
        links = [Link(current)] if current.is_valid else None
        parent = self._propagator.extract({TRACEPARENT: traceparent}) if traceparent else None
        if parent is not None and not get_current_span(parent).get_span_context().is_valid:
            parent = None
        return self._span(name, SpanKind.INTERNAL, parent, attributes, links)

    def traceparent(self) -> str | None:
        carrier: dict[str, str] = {}
        self._propagator.inject(carrier)
        return carrier.get(TRACEPARENT)

    def instrument_client(self, client: Client) -> Client:
        from temporalio.client import Client
        from temporalio.contrib.opentelemetry import TracingInterceptor

        config = client.config()
        if any(isinstance(i, TracingInterceptor) for i in config["interceptors"]):
            return client
        config["interceptors"] = [*config["interceptors"], TracingInterceptor(self._tracer)]
        # Same connection and settings; only the interceptor chain differs. Workers built on
        # this client pick the interceptor up for workflows and activities as well.
        return Client(**config)

    def flush(self) -> None:
        self._provider.force_flush(timeout_millis=5000)

    def shutdown(self) -> None:
        self._provider.shutdown()


def setup_tracing(endpoint: str, service: str, exporter: SpanExporter | None = None) -> Tracing:
    """Tracing for one process: OTLP (gRPC) to `endpoint`, or to `exporter` (tests); no-op if neither.

    Missing packages are not fatal: the process runs untraced and says why once.
    """
    if not endpoint and exporter is None:
        return NOOP
    try:
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor
    except ImportError:
        log.warning("HOOKYARD_OTEL_ENDPOINT is set but OpenTelemetry is not installed (pip install 'hookyard[otel]')")
        return NOOP
    provider = TracerProvider(resource=Resource.create({"service.name": service}))
    if exporter is not None:
        provider.add_span_processor(SimpleSpanProcessor(exporter))
    else:
        try:
            from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
        except ImportError:
            log.warning("the OTLP exporter is not installed (pip install 'hookyard[otel]'); tracing is off")
            return NOOP
        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=endpoint)))
    log.info("tracing to %s as %s", endpoint or "an in-process exporter", service)
    return OtelTracing(provider)
