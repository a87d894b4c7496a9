"""Dry runs: what a draft workflow would have done with events the owner already received.

For each chosen event the draft's trigger is applied exactly as the dispatcher applies it
(the route, the trigger data, `TriggerType.match` with its trace), and for each match the
action's request is rendered exactly as an attempt renders it (the same templates, the same
`HOOKYARD_MAX_RENDERED_BYTES` budget), then shown instead of sent. Nothing is sent, nothing is
stored, no secret is decrypted and no provider is called: credentials are shown by id, the
headers that carry them and signatures are masked, and actions without a plain HTTP request
(Gmail, Novu, e-mail, newsletters) show their rendered config.

Bounds: at most `MAX_EVENTS` events; bodies are read from the database a chunk at a time; one
overall deadline (`HOOKYARD_DRY_RUN_TIMEOUT_S`) after which the remaining events are reported
as not evaluated; and one output budget for the whole report (`HOOKYARD_DRY_RUN_MAX_OUTPUT_BYTES`)
after which matches are reported without their rendered request. Owner-scoped throughout: an
event id of another owner is reported as missing, exactly like an id that does not exist.

The console calls `dry_run` directly with a draft validated by `ingest.api.definitions`
(`validated_create`, or `validated_patch` for a saved workflow with a proposed change: the
same checks and 422 errors as create and PATCH); the API (`POST /api/workflows/dry-run` and
`POST /api/workflows/{id}/dry-run`) wraps the same calls.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any
from uuid import UUID

import asyncpg

from actions.base import MASK, PreviewContext
from actions.errors import PermanentActionError
from actions.registry import ACTIONS
from actions.templating import DEFAULT_MAX_RENDERED_BYTES, RenderBudget, TemplateError, render
from ingest.errors import Invalid
from schemas.sanitize import strip_nul
from schemas.store import events as event_store
from schemas.store.credentials import credential_provider
from schemas.store.events import EventSummary, EventWithBody
from triggers.base import WORKFLOW_ROUTE, InboxEvent
from triggers.filters import TraceStep, shown_value
from triggers.registry import TRIGGERS

if TYPE_CHECKING:
    from ingest.api.definitions import Definition
    from settings import Settings

MAX_EVENTS = 500
"""Events one dry run may look at."""
DEFAULT_EVENTS = 50
"""Events looked at when the caller names no limit."""
DRY_RUN_EXECUTION_ID = "00000000-0000-0000-0000-000000000000"
"""What `{{ execution.id }}` (and the idempotency key) render as: a dry run has no execution."""

_CHUNK = 25  # events whose bodies are in memory at once
_ERROR_CHARS = 500


@dataclass(frozen=True, slots=True)
class DryRunLimits:
    """How far one dry run may go; `from_settings` reads the deployment's limits."""

    deadline_s: float = 10.0
    max_rendered_bytes: int = DEFAULT_MAX_RENDERED_BYTES
    max_output_bytes: int = 4 * 1024 * 1024
    max_json_depth: int = 128

    @classmethod
    def from_settings(cls, settings: Settings) -> DryRunLimits:
        """The limits configured for this deployment."""
        return cls(
            deadline_s=settings.dry_run_timeout_s,
            max_rendered_bytes=settings.max_rendered_bytes,
            max_output_bytes=settings.dry_run_max_output_bytes,
            max_json_depth=settings.max_json_depth,
        )


@dataclass(frozen=True, slots=True)
class ActionOutcome:
    """What the action would have done for one match: a request, a rendered config, or an error."""

    action_type: str
    request: dict[str, Any] | None = None
    config: dict[str, Any] | None = None
    error: str | None = None

    def to_json(self) -> dict[str, Any]:
        """`{"type", "request", "config", "error"}`; exactly one of the last three is not null."""
        return {"type": self.action_type, "request": self.request, "config": self.config, "error": self.error}


@dataclass(frozen=True, slots=True)
class EventResult:
    """One event: whether the draft would have matched it, why, and what it would have sent.

    `evaluated` is False when the deadline passed before the event's turn (then `matched` is
    False and `reason` says so). `action` is set for matches only.
    """

    event_id: UUID
    source_type: str
    source_id: str
    received_at: datetime
    status: str
    evaluated: bool
    matched: bool
    reason: str
    trace: tuple[TraceStep, ...] = ()
    trace_truncated: bool = False
    action: ActionOutcome | None = None

    def to_json(self) -> dict[str, Any]:
        """The JSON shape of one row of a dry run."""
        return {
            "event": {
                "id": str(self.event_id),
                "source_type": self.source_type,
                "source_id": self.source_id,
                "received_at": self.received_at.isoformat(),
                "status": self.status,
            },
            "evaluated": self.evaluated,
            "matched": self.matched,
            "reason": self.reason,
            "trace": [step.to_json() for step in self.trace],
            "trace_truncated": self.trace_truncated,
            "action": None if self.action is None else self.action.to_json(),
        }


@dataclass(frozen=True, slots=True)
class DryRunReport:
    """The outcome of a dry run, newest event first (or in the order of the ids given).

    `missing_event_ids`: ids asked for that are not the owner's events. `stopped`: None, or
    "deadline" (later events not evaluated) or "output_limit" (later matches not rendered).
    """

    workflow_name: str
    trigger_type: str
    action_type: str
    results: tuple[EventResult, ...]
    missing_event_ids: tuple[UUID, ...] = ()
    stopped: str | None = None
    limits: DryRunLimits = field(default_factory=DryRunLimits)

    @property
    def matched(self) -> int:
        """How many of the events would have fired the workflow."""
        return sum(1 for r in self.results if r.matched)

    def to_json(self) -> dict[str, Any]:
        """The JSON answer of the dry-run endpoints."""
        return {
            "workflow": {
                "name": self.workflow_name,
                "trigger_type": self.trigger_type,
                "action_type": self.action_type,
            },
            "events": len(self.results),
            "evaluated": sum(1 for r in self.results if r.evaluated),
            "matched": self.matched,
            "results": [r.to_json() for r in self.results],
            "missing_event_ids": [str(i) for i in self.missing_event_ids],
            "stopped": self.stopped,
            "limits": {
                "max_events": MAX_EVENTS,
                "deadline_s": self.limits.deadline_s,
                "max_rendered_bytes": self.limits.max_rendered_bytes,
                "max_output_bytes": self.limits.max_output_bytes,
            },
        }


# --- the run -------------------------------------------------------------------------------


def check_event_choice(event_ids: Sequence[UUID] | None, since: datetime | None, limit: int) -> None:
    """The events of a dry run are named by ids or by since/limit, within MAX_EVENTS (422 otherwise)."""
    if event_ids is not None and since is not None:
        raise Invalid("give event_ids or since, not both", field="since")
    if not 1 <= limit <= MAX_EVENTS:
        raise Invalid(f"limit must be from 1 to {MAX_EVENTS}", field="limit")
    if event_ids is not None and not 1 <= len(event_ids) <= MAX_EVENTS:
        raise Invalid(f"event_ids must name 1 to {MAX_EVENTS} events", field="event_ids")


async def dry_run(
    pool: asyncpg.Pool,
    owner_id: UUID,
    workflow: Definition,
    *,
    event_ids: list[UUID] | None,
    since: datetime | None,
    limit: int,
    workflow_id: UUID | None = None,
    limits: DryRunLimits | None = None,
) -> DryRunReport:
    """Apply the validated draft `workflow` to the owner's stored events without running anything.

    Events are `event_ids` (in that order; ids that are not the owner's are reported missing)
    or the newest `limit` received at or after `since` (any time when None). `workflow_id`
    is the saved workflow's id when the draft is a patch of one: triggers routed by the
    workflow's own id (schedules) and `{{ workflow.id }}` need it. Raises `Invalid` when the
    choice of events is out of bounds.
    """
    limits = limits or DryRunLimits()
    check_event_choice(event_ids, since, limit)
    deadline = time.monotonic() + limits.deadline_s
    wanted = list(dict.fromkeys(event_ids)) if event_ids is not None else None
    async with pool.acquire() as conn:
        ids = await event_store.pick_event_ids(
            conn, owner_id, ids=wanted, since=since, limit=MAX_EVENTS if wanted else limit
        )
        provider = None
        if workflow.credential_id is not None:
            provider = await credential_provider(conn, owner_id, workflow.credential_id)
    found = set(ids)
    missing = tuple(i for i in wanted or () if i not in found)
    runner = _Runner(workflow, workflow_id, limits, provider)
    results: list[EventResult] = []
    for start in range(0, len(ids), _CHUNK):
        chunk = ids[start : start + _CHUNK]
        if time.monotonic() >= deadline:
            runner.stopped = "deadline"
        if runner.stopped == "deadline":
            results.extend(await _not_evaluated(pool, owner_id, chunk))
            continue
        async with pool.acquire() as conn:
            rows = await event_store.events_with_bodies(conn, owner_id, chunk)
        for row in rows:
            if time.monotonic() >= deadline:
                runner.stopped = "deadline"
            results.append(_skipped(row) if runner.stopped == "deadline" else runner.run(row))
            # Each event's work is bounded, but hundreds of them must not hold the event loop.
            await asyncio.sleep(0)
    return DryRunReport(
        workflow.name,
        workflow.trigger_type,
        workflow.action_type,
        tuple(results),
        missing,
        runner.stopped,
        limits,
    )


async def _not_evaluated(pool: asyncpg.Pool, owner_id: UUID, ids: list[UUID]) -> list[EventResult]:
    async with pool.acquire() as conn:
        rows = await event_store.event_summaries(conn, owner_id, ids)
    return [_skipped(row) for row in rows]


def _skipped(row: EventSummary | EventWithBody) -> EventResult:
    return EventResult(
        row.id,
        row.source_type,
        row.source_id,
        row.received_at,
        row.status,
        evaluated=False,
        matched=False,
        reason="not evaluated: the dry run's deadline passed first",
    )


class _Runner:
    """Applies one draft to events, keeping the report's output budget."""

    def __init__(
        self, workflow: Definition, workflow_id: UUID | None, limits: DryRunLimits, provider: str | None
    ) -> None:
        self.workflow = workflow
        self.workflow_id = workflow_id
        self.limits = limits
        self.provider = provider
        self.output_left = limits.max_output_bytes
        self.stopped: str | None = None
        self.trigger = TRIGGERS[workflow.trigger_type]
        key = workflow.routing_key
        self.route = str(workflow_id) if key == WORKFLOW_ROUTE and workflow_id is not None else key

    def run(self, row: EventWithBody) -> EventResult:
        """Route, match and render one event; a failure is this event's row, never the run's."""
        base = (row.id, row.source_type, row.source_id, row.received_at, row.status)
        route = self._route_step(row)
        if not route.matched:
            if self.route == WORKFLOW_ROUTE:
                reason = "this trigger fires only for its own saved workflow; dry-run the saved workflow with a patch"
            else:
                reason = f"the trigger listens on {route.expected}; this event came from {route.seen}"
            return EventResult(*base, evaluated=True, matched=False, reason=reason, trace=(route,))
        event = InboxEvent(
            id=row.id,
            owner_id=row.owner_id,
            source_type=row.source_type,
            source_id=row.source_id,
            headers=row.headers,
            body=row.body,
            received_at=row.received_at.isoformat(),
            max_json_depth=self.limits.max_json_depth,
        )
        try:
            data = strip_nul(self.trigger.trigger_data(event))
            outcome = self.trigger.match(self.workflow.trigger_config, data)
        except Exception as exc:  # the dispatcher would reject this event; show why, go on
            reason = f"the event could not be matched ({type(exc).__name__}); the dispatcher rejects such events"
            return EventResult(*base, evaluated=True, matched=False, reason=reason, trace=(route,))
        trace = (route, *outcome.trace)
        action = self._action(data) if outcome.matched else None
        return EventResult(
            *base,
            evaluated=True,
            matched=outcome.matched,
            reason=outcome.reason,
            trace=trace,
            trace_truncated=outcome.truncated,
            action=action,
        )

    def _route_step(self, row: EventWithBody) -> TraceStep:
        expected = f"{self.trigger.source_type}:{self.route}"
        seen = f"{row.source_type}:{row.source_id}"
        return TraceStep(
            "route",
            "route",
            row.source_type == self.trigger.source_type and row.source_id == self.route,
            path="source",
            op="equals",
            expected=shown_value(expected),
            seen=shown_value(seen),
        )

    def _action(self, data: Mapping[str, Any]) -> ActionOutcome:
        action_type = self.workflow.action_type
        if self.output_left <= 0:
            self.stopped = self.stopped or "output_limit"
            return ActionOutcome(action_type, error="not rendered: the dry run's output limit was reached")
        # The budget of a real attempt, so a request too large to send fails here as it would there.
        budget = RenderBudget(self.limits.max_rendered_bytes)
        context = {
            "trigger": data,
            "execution": {"id": DRY_RUN_EXECUTION_ID, "attempt": 1},
            "workflow": {
                "id": None if self.workflow_id is None else str(self.workflow_id),
                "name": self.workflow.name,
            },
        }
        outcome = _render_action(self.workflow, context, budget, self.provider)
        self.output_left -= self.limits.max_rendered_bytes - budget.remaining
        return outcome


def _render_action(
    workflow: Definition, context: Mapping[str, Any], budget: RenderBudget, provider: str | None
) -> ActionOutcome:
    """The request (or rendered config) of one attempt, or the error the attempt would fail with."""
    action = ACTIONS[workflow.action_type]
    credential = None if workflow.credential_id is None else str(workflow.credential_id)
    try:
        if action.preview is not None:
            ctx = PreviewContext(context, budget, DRY_RUN_EXECUTION_ID, credential, provider)
            return ActionOutcome(workflow.action_type, request=action.preview(ctx, workflow.action_config).to_json())
        rendered = render(workflow.action_config, context, field="", budget=budget)
    except (TemplateError, PermanentActionError) as exc:
        return ActionOutcome(workflow.action_type, error=str(exc)[:_ERROR_CHARS])
    config = _masked_config(workflow.action_type, rendered)
    if credential is not None:
        config["credential_id"] = credential
    return ActionOutcome(workflow.action_type, config=config)


def _masked_config(action_type: str, rendered: object) -> dict[str, Any]:
    """The rendered config with `writeOnly` fields hidden, as `GET /api/workflows` hides them."""
    if not isinstance(rendered, dict):
        return {}
    properties = ACTIONS[action_type].config_schema.get("properties", {})
    hidden = {name for name, spec in properties.items() if isinstance(spec, dict) and spec.get("writeOnly")}
    return {key: (MASK if key in hidden else value) for key, value in rendered.items()}
