"""Specification of optional tracing: a free no-op by default, W3C trace context when enabled."""

from __future__ import annotations

import pytest

from telemetry.tracing import NOOP, Tracing, setup_tracing

pytest.importorskip("opentelemetry.sdk.trace", reason="the otel extra is not installed")

from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

SENDER_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
SENDER_PARENT = f"00-{SENDER_TRACE}-00f067aa0ba902b7-01"


def enabled() -> tuple[Tracing, InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    return setup_tracing("", "hookyard-test", exporter=exporter), exporter


def test_without_an_endpoint_tracing_is_the_no_op() -> None:
    assert setup_tracing("", "hookyard-api") is NOOP
    assert NOOP.enabled is False
    with NOOP.server_span("POST /hooks/{endpoint_id}", {"traceparent": SENDER_PARENT}) as span:
        span.set_status_code(202)
        assert NOOP.traceparent() is None


def test_server_span_continues_the_senders_traceparent() -> None:
    tracing, exporter = enabled()
    with tracing.server_span("POST /hooks/{endpoint_id}", {"traceparent": SENDER_PARENT}) as span:
        span.set_status_code(202)
    [finished] = exporter.get_finished_spans()
    assert format(finished.context.trace_id, "032x") == SENDER_TRACE
    assert format(finished.parent.span_id, "016x") == "00f067aa0ba902b7"
    assert finished.kind is SpanKind.SERVER
    assert finished.attributes["http.response.status_code"] == 202
    assert finished.resource.attributes["service.name"] == "hookyard-test"


def test_server_span_without_traceparent_starts_a_new_trace() -> None:
    tracing, exporter = enabled()
    with tracing.server_span("POST /hooks/{endpoint_id}", {}):
        pass
    [finished] = exporter.get_finished_spans()
    assert finished.parent is None


def test_traceparent_inside_a_span_names_that_span() -> None:
    tracing, exporter = enabled()
    with tracing.server_span("request", {"traceparent": SENDER_PARENT}):
        stored = tracing.traceparent()
    [finished] = exporter.get_finished_spans()
    assert stored == f"00-{SENDER_TRACE}-{finished.context.span_id:016x}-01"


def test_continued_span_is_a_child_of_the_first_trace_and_links_the_others() -> None:
    tracing, exporter = enabled()
    other = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    with tracing.continued_span("hookyard.handover", [SENDER_PARENT, None, other, "garbage"], {"n": 3}):
        pass
    [finished] = exporter.get_finished_spans()
    assert format(finished.context.trace_id, "032x") == SENDER_TRACE
    assert [format(link.context.trace_id, "032x") for link in finished.links] == ["0af7651916cd43dd8448eb211c80319c"]
    assert finished.kind is SpanKind.PRODUCER
    assert finished.attributes["n"] == 3


def test_continued_span_with_no_stored_context_starts_a_new_trace() -> None:
    tracing, exporter = enabled()
    with tracing.continued_span("hookyard.handover", [None, None]):
        pass
    [finished] = exporter.get_finished_spans()
    assert finished.parent is None
    assert list(finished.links) == []


def test_server_error_marks_the_span_failed_but_client_errors_do_not() -> None:
    from opentelemetry.trace import StatusCode

    tracing, exporter = enabled()
    for status in (401, 503):
        with tracing.server_span("request", {}) as span:
            span.set_status_code(status)
    client_error, server_error = exporter.get_finished_spans()
    assert client_error.status.status_code is StatusCode.UNSET
    assert server_error.status.status_code is StatusCode.ERROR


def test_an_exception_leaving_a_span_is_recorded_by_type_and_propagates() -> None:
    tracing, exporter = enabled()
    with pytest.raises(KeyError), tracing.span("hookyard.action", {"hookyard.action": "http.request"}):
        raise KeyError("boom")
    [finished] = exporter.get_finished_spans()
    assert finished.attributes["error.type"] == "KeyError"
    assert finished.attributes["hookyard.action"] == "http.request"
