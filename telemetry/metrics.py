"""Prometheus metrics: one `Metrics` per process, built at start and handed to whatever records.

Every series is named `hookyard_…`. Labels are bounded sets only (source types, outcomes,
action types, provider names); ids never become labels. Hot paths use children bound once
(`Metrics.source(...)`), so recording costs one locked add.

Helpers for code that may run without metrics (`None`) are plain functions:
`record_failover` and `record_credential_refresh_failure`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import choose_encoder, start_http_server
from prometheus_client.gc_collector import GCCollector
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector

if TYPE_CHECKING:
    from temporalio.runtime import Runtime

log = logging.getLogger(__name__)

# Ingest answers after a commit: milliseconds normally, seconds when PostgreSQL struggles.
INGEST_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
# Actions call third parties: tens of milliseconds up to their timeouts.
ACTION_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)

INGEST_OUTCOMES = ("accepted", "duplicate", "rejected")
FINAL_STATUSES = ("succeeded", "failed")


@dataclass(frozen=True, slots=True)
class SourceMeter:
    """Children of the ingest series bound to one source type, for the per-request path."""

    source: str
    accepted: Counter
    duplicate: Counter
    rejected: Counter
    latency: Histogram
    _failures: Counter

    def verification_failed(self, reason: str) -> None:
        """Count a request whose signature or token did not verify, by the verifier's reason code."""
        self._failures.labels(self.source, reason).inc()


# What the reconciler (worker/dispatch/reconciler.py) can do: (kind, reason).
RECONCILER_ACTIONS = (
    ("execution", "workflow_gone"),
    ("execution", "queued_overdue"),
    ("execution", "retry_overdue"),
    ("execution", "attempt_overdue"),
    ("newsletter", "workflow_gone"),
    ("mailbox", "workflow_gone"),
)


class Metrics:
    """The series one process records, on its own registry (the default registry is never used)."""

    def __init__(self, registry: CollectorRegistry | None = None, *, process_collectors: bool = False) -> None:
        self.registry = CollectorRegistry() if registry is None else registry
        r = self.registry
        if process_collectors:
            # Only for a process's own registry: each may be registered once per registry.
            ProcessCollector(registry=r)
            PlatformCollector(registry=r)
            GCCollector(registry=r)

        self.events_received = Counter(
            "hookyard_events_received",
            "Requests to ingest endpoints, by source type and outcome (accepted, duplicate, rejected).",
            ["source", "outcome"],
            registry=r,
        )
        self.verification_failures = Counter(
            "hookyard_verification_failures",
            "Ingest requests refused because their signature or token did not verify, by reason.",
            ["source", "reason"],
            registry=r,
        )
        self.ingest_duration = Histogram(
            "hookyard_ingest_duration_seconds",
            "Time from request to durable answer for stored (accepted or duplicate) events.",
            ["source"],
            buckets=INGEST_BUCKETS,
            registry=r,
        )
        self.inbox_backlog = Gauge(
            "hookyard_inbox_backlog", "Events stored but not yet resolved by a dispatcher.", registry=r
        )
        self.inbox_lag = Gauge(
            "hookyard_inbox_lag_seconds", "Age of the oldest event not yet resolved (0 when none wait).", registry=r
        )
        self.dispatched_events = Counter(
            "hookyard_dispatched_events",
            "Events resolved by the dispatcher, by result (dispatched, unmatched, rejected: could not be resolved).",
            ["status"],
            registry=r,
        )
        self.handover_executions = Counter(
            "hookyard_handover_executions", "Executions handed to Temporal automation workflows.", registry=r
        )
        self.handover_failures = Counter(
            "hookyard_handover_failures", "Hand-over passes that failed because Temporal did not answer.", registry=r
        )
        self.handover_workflow_failures = Counter(
            "hookyard_handover_workflow_failures",
            "Hand-overs to one automation workflow that failed while Temporal answered others; retried alone.",
            registry=r,
        )
        self.reconciler_actions = Counter(
            "hookyard_reconciler_actions",
            "What the reconciler re-drove: kind (execution, newsletter, mailbox) and why.",
            ["kind", "reason"],
            registry=r,
        )
        for kind, reason in RECONCILER_ACTIONS:  # present at zero, so rates and alerts see them
            self.reconciler_actions.labels(kind, reason)
        self.executions_finished = Counter(
            "hookyard_executions_finished",
            "Executions that reached a final status (succeeded, failed), by action type.",
            ["action", "status"],
            registry=r,
        )
        self.action_retries = Counter(
            "hookyard_action_retries",
            "Action attempts that failed and will be retried, by action type.",
            ["action"],
            registry=r,
        )
        self.action_duration = Histogram(
            "hookyard_action_duration_seconds",
            "Duration of each action attempt, whatever its outcome, by action type.",
            ["action"],
            buckets=ACTION_BUCKETS,
            registry=r,
        )
        self.provider_failovers = Counter(
            "hookyard_provider_failovers",
            "Actions that moved from one provider to another after a failure.",
            ["from_provider", "to_provider"],
            registry=r,
        )
        self.credential_refresh_failures = Counter(
            "hookyard_credential_refresh_failures",
            "Failed refreshes of stored provider credentials (OAuth tokens), by provider.",
            ["provider"],
            registry=r,
        )
        self.outbox_polls = Counter(
            "hookyard_outbox_polls",
            "Polls of owners' outbox tables (postgres.outbox), by outcome (ok, error).",
            ["outcome"],
            registry=r,
        )
        self.outbox_rows_claimed = Counter(
            "hookyard_outbox_rows_claimed", "Outbox rows claimed and stored as events.", registry=r
        )
        self.outbox_rows_written = Counter(
            "hookyard_outbox_rows_written",
            "Outbox rows whose outcome was written back, by outcome (sent, failed, released).",
            ["outcome"],
            registry=r,
        )
        self.outbox_oldest_due_lag = Gauge(
            "hookyard_outbox_oldest_due_lag_seconds",
            "Lag of the oldest due outbox row, the largest over the outbox workflows this process polls.",
            registry=r,
        )
        self.outbox_failing_workflows = Gauge(
            "hookyard_outbox_failing_workflows",
            "Outbox workflows whose last poll by this process failed (the API shows why).",
            registry=r,
        )
        for outcome in ("ok", "error"):
            self.outbox_polls.labels(outcome)
        for outcome in ("sent", "failed", "released"):
            self.outbox_rows_written.labels(outcome)
        self._outbox_lags: dict[str, float] = {}
        self._outbox_failing: set[str] = set()
        self._sources: dict[str, SourceMeter] = {}
        self._actions: dict[str, tuple[Histogram, Counter, Counter, Counter]] = {}
        self.webhook = self.source("webhook")
        for status in ("dispatched", "unmatched", "rejected"):
            self.dispatched_events.labels(status)

    def source(self, source: str) -> SourceMeter:
        """The ingest children for one source type (webhook, gmail, …); created once, then reused."""
        meter = self._sources.get(source)
        if meter is None:
            accepted, duplicate, rejected = (self.events_received.labels(source, o) for o in INGEST_OUTCOMES)
            latency = self.ingest_duration.labels(source)
            meter = SourceMeter(source, accepted, duplicate, rejected, latency, self.verification_failures)
            self._sources[source] = meter
        return meter

    def record_attempt(self, action: str, status: str, seconds: float) -> None:
        """One action attempt ended: `status` is succeeded, failed, or running (a retry follows)."""
        children = self._actions.get(action)
        if children is None:
            children = (
                self.action_duration.labels(action),
                self.executions_finished.labels(action, "succeeded"),
                self.executions_finished.labels(action, "failed"),
                self.action_retries.labels(action),
            )
            self._actions[action] = children
        duration, succeeded, failed, retries = children
        duration.observe(seconds)
        if status == "succeeded":
            succeeded.inc()
        elif status == "failed":
            failed.inc()
        else:
            retries.inc()

    def outbox_poll(self, workflow: str, claimed: int, failed: bool, lag_s: float | None) -> None:
        """One outbox workflow was polled: `claimed` rows, whether it failed, its oldest due lag."""
        self.outbox_polls.labels("error" if failed else "ok").inc()
        self.outbox_rows_claimed.inc(claimed)
        if failed:
            self._outbox_failing.add(workflow)
        else:
            self._outbox_failing.discard(workflow)
            self._outbox_lags[workflow] = lag_s or 0.0
        self.outbox_failing_workflows.set(len(self._outbox_failing))
        self.outbox_oldest_due_lag.set(max(self._outbox_lags.values(), default=0.0))

    def set_inbox(self, backlog: int, lag_s: float) -> None:
        """The inbox's current depth and the age of its oldest waiting event."""
        self.inbox_backlog.set(backlog)
        self.inbox_lag.set(lag_s)

    def exposition(self, accept: str | None = None) -> tuple[bytes, str]:
        """The registry in the text format the scraper asked for: (body, content type)."""
        encoder, content_type = choose_encoder(accept or "")
        return encoder(self.registry), content_type


def record_failover(metrics: Metrics | None, from_provider: str, to_provider: str) -> None:
    """Count an action that gave up on `from_provider` and tried `to_provider` (e.g. resend -> postmark)."""
    if metrics is not None:
        metrics.provider_failovers.labels(from_provider, to_provider).inc()


def record_credential_refresh_failure(metrics: Metrics | None, provider: str) -> None:
    """Count a failed refresh of a stored credential for `provider` (e.g. google)."""
    if metrics is not None:
        metrics.credential_refresh_failures.labels(provider).inc()


def serve_metrics(metrics: Metrics, host: str, port: int) -> Callable[[], None] | None:
    """Serve `/metrics` from a daemon thread on host:port (0 = off); returns a function that stops it.

    A port already taken is logged, not fatal: metrics are worth less than the process's work.
    """
    if port <= 0:
        return None
    try:
        server, thread = start_http_server(port, addr=host, registry=metrics.registry)
    except OSError as exc:
        log.error("metrics listener on %s:%d could not start: %s", host, port, exc)
        return None
    log.info("metrics on http://%s:%d/metrics", host, port)

    def stop() -> None:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)

    return stop


def temporal_runtime(host: str, port: int) -> Runtime | None:
    """A Temporal SDK runtime serving the SDK's own metrics (`temporal_…`) on host:port; None if port is 0."""
    if port <= 0:
        return None
    from temporalio.runtime import PrometheusConfig, Runtime, TelemetryConfig

    try:
        return Runtime(telemetry=TelemetryConfig(metrics=PrometheusConfig(bind_address=f"{host}:{port}")))
    except Exception as exc:  # the core raises a plain RuntimeError when it cannot bind
        log.error("temporal metrics listener on %s:%d could not start: %s", host, port, exc)
        return None


def install_temporal_runtime(host: str, port: int) -> bool:
    """Make that runtime the process default; call before the first Temporal client is created."""
    runtime = temporal_runtime(host, port)
    if runtime is None:
        return False
    from temporalio.runtime import Runtime

    Runtime.set_default(runtime, error_if_already_set=False)
    log.info("temporal SDK metrics on http://%s:%d/metrics", host, port)
    return True
