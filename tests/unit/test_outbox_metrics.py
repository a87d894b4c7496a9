"""Outbox poll metrics: what each poll adds, and the gauges over the workflows polled."""

from __future__ import annotations

from telemetry.metrics import Metrics


def _value(metrics: Metrics, name: str, labels: dict[str, str] | None = None) -> float | None:
    value: float | None = metrics.registry.get_sample_value(name, labels or {})
    return value


def test_polls_count_rows_and_outcomes_and_the_lag_is_the_largest_seen() -> None:
    metrics = Metrics()
    metrics.outbox_poll("wf-1", 5, False, 2.5)
    metrics.outbox_poll("wf-2", 0, False, 7.0)
    metrics.outbox_poll("wf-3", 0, True, None)

    assert _value(metrics, "hookyard_outbox_rows_claimed_total") == 5
    assert _value(metrics, "hookyard_outbox_polls_total", {"outcome": "ok"}) == 2
    assert _value(metrics, "hookyard_outbox_polls_total", {"outcome": "error"}) == 1
    assert _value(metrics, "hookyard_outbox_oldest_due_lag_seconds") == 7.0
    assert _value(metrics, "hookyard_outbox_failing_workflows") == 1


def test_a_workflow_that_recovers_is_no_longer_counted_failing() -> None:
    metrics = Metrics()
    metrics.outbox_poll("wf-1", 0, True, None)
    metrics.outbox_poll("wf-1", 3, False, 0.0)
    assert _value(metrics, "hookyard_outbox_failing_workflows") == 0
