"""Specification of the Prometheus series: names, labels, and what each helper records."""

from __future__ import annotations

import urllib.request

from prometheus_client.parser import text_string_to_metric_families

from hookyard.services import free_port
from telemetry.metrics import Metrics, record_credential_refresh_failure, record_failover, serve_metrics


def sample(metrics: Metrics, name: str, **labels: str) -> float | None:
    value = metrics.registry.get_sample_value(name, labels)
    return value


def test_ingest_series_exist_at_zero_before_any_request() -> None:
    metrics = Metrics()
    for outcome in ("accepted", "duplicate", "rejected"):
        assert sample(metrics, "hookyard_events_received_total", source="webhook", outcome=outcome) == 0
    assert sample(metrics, "hookyard_ingest_duration_seconds_count", source="webhook") == 0


def test_source_meter_is_bound_once_and_counts_per_source() -> None:
    metrics = Metrics()
    assert metrics.source("gmail") is metrics.source("gmail")
    metrics.source("gmail").accepted.inc()
    metrics.webhook.duplicate.inc(2)
    assert sample(metrics, "hookyard_events_received_total", source="gmail", outcome="accepted") == 1
    assert sample(metrics, "hookyard_events_received_total", source="webhook", outcome="duplicate") == 2
    assert sample(metrics, "hookyard_events_received_total", source="webhook", outcome="accepted") == 0


def test_verification_failures_are_counted_by_source_and_reason() -> None:
    metrics = Metrics()
    metrics.webhook.verification_failed("bad_signature")
    metrics.webhook.verification_failed("bad_signature")
    metrics.webhook.verification_failed("stale_timestamp")
    assert sample(metrics, "hookyard_verification_failures_total", source="webhook", reason="bad_signature") == 2
    assert sample(metrics, "hookyard_verification_failures_total", source="webhook", reason="stale_timestamp") == 1


def test_attempts_count_final_statuses_retries_and_every_duration() -> None:
    metrics = Metrics()
    metrics.record_attempt("http.request", "running", 0.2)
    metrics.record_attempt("http.request", "succeeded", 0.1)
    metrics.record_attempt("email.send", "failed", 1.5)
    assert sample(metrics, "hookyard_executions_finished_total", action="http.request", status="succeeded") == 1
    assert sample(metrics, "hookyard_executions_finished_total", action="http.request", status="failed") == 0
    assert sample(metrics, "hookyard_executions_finished_total", action="email.send", status="failed") == 1
    assert sample(metrics, "hookyard_action_retries_total", action="http.request") == 1
    assert sample(metrics, "hookyard_action_duration_seconds_count", action="http.request") == 2
    assert sample(metrics, "hookyard_action_duration_seconds_sum", action="email.send") == 1.5


def test_inbox_gauges_hold_the_latest_reading() -> None:
    metrics = Metrics()
    metrics.set_inbox(12, 3.5)
    metrics.set_inbox(4, 0.25)
    assert sample(metrics, "hookyard_inbox_backlog") == 4
    assert sample(metrics, "hookyard_inbox_lag_seconds") == 0.25


def test_failover_and_credential_refresh_helpers_record_and_accept_no_metrics() -> None:
    metrics = Metrics()
    record_failover(metrics, "resend", "postmark")
    record_credential_refresh_failure(metrics, "google")
    record_failover(None, "resend", "postmark")
    record_credential_refresh_failure(None, "google")
    assert sample(metrics, "hookyard_provider_failovers_total", from_provider="resend", to_provider="postmark") == 1
    assert sample(metrics, "hookyard_credential_refresh_failures_total", provider="google") == 1


def test_each_metrics_object_has_its_own_registry() -> None:
    first, second = Metrics(process_collectors=True), Metrics(process_collectors=True)
    first.webhook.accepted.inc()
    assert sample(second, "hookyard_events_received_total", source="webhook", outcome="accepted") == 0


def test_exposition_negotiates_openmetrics_and_defaults_to_prometheus_text() -> None:
    metrics = Metrics()
    _, plain = metrics.exposition(None)
    body, open_metrics = metrics.exposition("application/openmetrics-text; version=1.0.0")
    assert plain.startswith("text/plain")
    assert open_metrics.startswith("application/openmetrics-text")
    assert body.rstrip().endswith(b"# EOF")


def test_listener_serves_the_registry_and_stops() -> None:
    metrics = Metrics()
    metrics.record_attempt("http.request", "succeeded", 0.05)
    port = free_port()
    stop = serve_metrics(metrics, "127.0.0.1", port)
    assert stop is not None
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
            text = response.read().decode()
    finally:
        stop()
    names = {family.name for family in text_string_to_metric_families(text)}
    assert {"hookyard_executions_finished", "hookyard_action_duration_seconds"} <= names


def test_port_zero_means_no_listener() -> None:
    assert serve_metrics(Metrics(), "127.0.0.1", 0) is None


def test_a_taken_port_is_reported_not_fatal() -> None:
    metrics = Metrics()
    port = free_port()
    stop = serve_metrics(metrics, "127.0.0.1", port)
    assert stop is not None
    try:
        assert serve_metrics(Metrics(), "127.0.0.1", port) is None
    finally:
        stop()
