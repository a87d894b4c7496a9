"""Execution records: one per (workflow, event), plus replays and manual runs."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

import asyncpg

from schemas.errors import NotFound
from schemas.store.notifications import SUBSCRIBED
from schemas.store.outbox import TRIGGER_TYPE as OUTBOX_TRIGGER
from schemas.store.rows import row_of, rows_of
from schemas.store.subscriptions import record_delivery_outcomes
from schemas.store.terminal import RETURNING, after_terminal, returning

TERMINAL = ("succeeded", "failed", "cancelled")
# How long an attempt may be in flight: the automation's batch activity start-to-close
# (worker/automation/contract.py BATCH_START_TO_CLOSE_S). Within it, an attempt claimed by another run of
# the same automation is not taken again; past it, that attempt cannot still be running.
ATTEMPT_IN_FLIGHT_S = 15 * 60.0


async def insert_for_events(
    conn: asyncpg.Connection,
    owner_ids: list[UUID],
    workflow_ids: list[UUID],
    event_ids: list[UUID],
    trigger_data: list[dict[str, Any]],
) -> dict[tuple[UUID, UUID], UUID]:
    """Create queued executions; an existing (workflow, event) pair is left alone.

    Returns {(workflow_id, event_id): execution_id} for the rows created.
    """
    rows = await conn.fetch(
        "INSERT INTO executions (owner_id, workflow_id, event_id, trigger_data) "
        "SELECT * FROM unnest($1::uuid[], $2::uuid[], $3::uuid[], $4::jsonb[]) "
        "ON CONFLICT (workflow_id, event_id) WHERE replay_of IS NULL AND event_id IS NOT NULL DO NOTHING "
        "RETURNING id, workflow_id, event_id",
        owner_ids,
        workflow_ids,
        event_ids,
        trigger_data,
    )
    return {(r["workflow_id"], r["event_id"]): r["id"] for r in rows}


async def insert_replay(conn: asyncpg.Connection, owner_id: UUID, execution_id: UUID) -> UUID | None:
    """A new queued execution with the same workflow, event and trigger data; None if not found."""
    new_id: UUID | None = await conn.fetchval(
        "INSERT INTO executions (owner_id, workflow_id, event_id, replay_of, trigger_data) "
        "SELECT x.owner_id, x.workflow_id, x.event_id, x.id, x.trigger_data FROM executions x "
        "JOIN workflows w ON w.id = x.workflow_id AND w.deleted_at IS NULL "
        "WHERE x.id = $1 AND x.owner_id = $2 RETURNING id",
        execution_id,
        owner_id,
    )
    if new_id is not None:
        await conn.execute("SELECT pg_notify('hookyard_events', '')")
    return new_id


async def handover_workflows(conn: asyncpg.Connection, limit: int, after: UUID | None = None) -> list[UUID]:
    """User workflows with executions not yet handed to Temporal, in id order after `after`
    (a skip scan: one probe each)."""
    rows = await conn.fetch(
        "WITH RECURSIVE wf AS ("
        " (SELECT workflow_id FROM executions WHERE signalled_at IS NULL AND status IN ('queued', 'running') "
        "  AND ($2::uuid IS NULL OR workflow_id > $2) ORDER BY workflow_id LIMIT 1) "
        " UNION ALL "
        " SELECT (SELECT x.workflow_id FROM executions x WHERE x.signalled_at IS NULL "
        "  AND x.status IN ('queued', 'running') AND x.workflow_id > wf.workflow_id ORDER BY x.workflow_id LIMIT 1) "
        " FROM wf WHERE wf.workflow_id IS NOT NULL) "
        "SELECT workflow_id FROM wf WHERE workflow_id IS NOT NULL LIMIT $1",
        limit,
        after,
    )
    return [r["workflow_id"] for r in rows]


async def claim_handover(
    conn: asyncpg.Connection, workflow_ids: list[UUID], limit: int, max_pending: int
) -> list[asyncpg.Record]:
    """Lock executions of these workflows not yet handed to Temporal (call inside a transaction).

    Each workflow gets at most `max_pending` minus what its automation already holds (handed over
    and unfinished), so a backlog stays in PostgreSQL rather than in Temporal's payloads. Rows
    handed back by the reconciler (`running`, waiting for a retry) are taken like queued ones;
    `redrive` marks rows that were run before (only the reconciler un-signals such rows).
    """
    rows: list[asyncpg.Record] = await conn.fetch(
        # Internal workflows (subscription deliveries) run in strict FIFO order through retries.
        "SELECT c.id, c.workflow_id, c.redrive, w.concurrency_limit, w.retry_policy, w.lane, w.internal AS ordered "
        "FROM unnest($1::uuid[]) AS r(wf) JOIN workflows w ON w.id = r.wf "
        "CROSS JOIN LATERAL (SELECT greatest(0, $3 - count(*)) AS room FROM (SELECT 1 FROM executions o "
        "  WHERE o.workflow_id = r.wf AND o.signalled_at IS NOT NULL AND o.status IN ('queued', 'running') "
        "  LIMIT $3) s) q "
        "CROSS JOIN LATERAL (SELECT x.id, x.workflow_id, x.seq, (x.status = 'running' OR x.attempts > 0) AS redrive "
        "  FROM executions x WHERE x.workflow_id = r.wf "
        "  AND x.signalled_at IS NULL AND x.status IN ('queued', 'running') ORDER BY x.seq "
        "  LIMIT least(q.room, $2) FOR UPDATE OF x SKIP LOCKED) c "
        "ORDER BY c.seq LIMIT $2",
        workflow_ids,
        limit,
        max_pending,
    )
    return rows


async def mark_signalled(conn: asyncpg.Connection, ids: list[UUID], lanes: list[int | None] | None = None) -> None:
    """Record that Temporal holds these executions, and which lane (None: the workflow's automation)."""
    await conn.execute(
        "UPDATE executions x SET signalled_at = now(), lane = u.lane "
        "FROM unnest($1::uuid[], $2::int[]) AS u(id, lane) WHERE x.id = u.id",
        ids,
        lanes if lanes is not None else [None] * len(ids),
    )


async def workflow_lanes(conn: asyncpg.Connection, workflow_ids: list[UUID]) -> dict[UUID, int]:
    """The lane of each of these workflows."""
    rows = await conn.fetch("SELECT id, lane FROM workflows WHERE id = ANY($1::uuid[])", workflow_ids)
    return {r["id"]: r["lane"] for r in rows}


async def lane_rooms(conn: asyncpg.Connection, lanes: list[int], max_pending: int) -> dict[int, int]:
    """How many more executions each lane may be handed: `max_pending` minus what it holds
    (handed over and unfinished), counted up to the cap (one index range each)."""
    rows = await conn.fetch(
        "SELECT l.lane, greatest(0, $2 - (SELECT count(*) FROM (SELECT 1 FROM executions o "
        "  WHERE o.lane = l.lane AND o.signalled_at IS NOT NULL AND o.status IN ('queued', 'running') "
        "  LIMIT $2) s)) AS room FROM unnest($1::int[]) AS l(lane)",
        lanes,
        max_pending,
    )
    return {r["lane"]: r["room"] for r in rows}


async def claim_for_run(
    conn: asyncpg.Connection, ids: list[UUID], temporal_workflow_id: str, temporal_run_id: str
) -> list[asyncpg.Record]:
    """Start an attempt of each execution that may still run.

    Executions already finished are skipped (a duplicate hand-over runs nothing); those whose
    workflow was deactivated meanwhile are cancelled. An attempt another run (of the same or
    another Temporal workflow: a lane, or the automation that held it before lanes) claimed less
    than ATTEMPT_IN_FLIGHT_S ago and has not recorded may still be in flight (that run was
    terminated or reset under it), so it is skipped too; the same run may take it again (its
    activity is retried after the worker running it was lost).
    """
    # One statement claims the executions of active workflows and names those of inactive ones,
    # which are then cancelled in a transaction of their own with `after_terminal` (rare: a
    # deactivation racing the hand-over), so the common claim stays one round trip.
    rows: list[asyncpg.Record] = await conn.fetch(
        _CLAIM, ids, temporal_workflow_id, temporal_run_id, ATTEMPT_IN_FLIGHT_S
    )
    inactive = [r["id"] for r in rows if r["inactive"]]
    if inactive:
        await _cancel_inactive(conn, inactive)
    return [r for r in rows if not r["inactive"]]


async def _cancel_inactive(conn: asyncpg.Connection, ids: list[UUID]) -> None:
    async with conn.transaction():
        rows = await conn.fetch(
            "UPDATE executions x SET status = 'cancelled', finished_at = now(), next_attempt_at = NULL, "
            "error = 'workflow was deactivated before this execution ran' FROM workflows w "
            "WHERE x.id = ANY($1::uuid[]) AND w.id = x.workflow_id AND x.status IN ('queued', 'running') "
            f"AND NOT (w.active AND w.deleted_at IS NULL) RETURNING {returning('x')}",
            ids,
        )
        await after_terminal(conn, rows)


_CLAIM = (
    "WITH claimed AS (UPDATE executions x SET status = 'running', attempts = x.attempts + 1, "
    "started_at = coalesce(x.started_at, now()), next_attempt_at = NULL, attempt_started_at = now(), "
    "temporal_workflow_id = $2, temporal_run_id = $3 FROM workflows w "
    "WHERE x.id = ANY($1::uuid[]) AND w.id = x.workflow_id AND x.status IN ('queued', 'running') "
    "AND w.active AND w.deleted_at IS NULL "
    "AND NOT (x.status = 'running' AND x.next_attempt_at IS NULL "
    "AND (x.temporal_workflow_id, x.temporal_run_id) IS DISTINCT FROM ($2, $3) "
    "AND coalesce(x.attempt_started_at, '-infinity') > now() - make_interval(secs => $4)) "
    "RETURNING x.id, x.owner_id, x.workflow_id, x.event_id, x.trigger_data, x.attempts, "
    "w.name AS workflow_name, w.action_type, w.action_config, w.credential_id, w.retry_policy) "
    "SELECT false AS inactive, c.* FROM claimed c "
    "UNION ALL SELECT true, x.id, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL "
    "FROM executions x JOIN workflows w ON w.id = x.workflow_id WHERE x.id = ANY($1::uuid[]) "
    "AND x.status IN ('queued', 'running') AND NOT (w.active AND w.deleted_at IS NULL)"
)


async def record_outcomes(conn: asyncpg.Connection, outcomes: list[dict[str, Any]]) -> None:
    """Write attempt outcomes: {id, status, result, error, retry_in_s}; terminal ones get
    finished_at and are reported to `after_terminal`, and deliveries' outcomes keep their
    subscriptions' health, in the same transaction."""
    async with conn.transaction():
        rows = await conn.fetch(
            "UPDATE executions x SET status = u.status, result = u.result, error = u.error, "
            "finished_at = CASE WHEN u.status IN ('succeeded', 'failed', 'cancelled') THEN now() END, "
            "next_attempt_at = CASE WHEN u.retry_in IS NULL THEN NULL "
            "ELSE now() + make_interval(secs => u.retry_in) END "
            "FROM unnest($1::uuid[], $2::text[], $3::jsonb[], $4::text[], $5::float8[]) "
            "AS u(id, status, result, error, retry_in), workflows w "
            "WHERE x.id = u.id AND x.status = 'running' AND w.id = x.workflow_id "
            f"RETURNING {returning('x')}, w.internal, coalesce(x.result->>'gone' = 'true', false) AS gone, "
            # Saves `after_terminal` a round trip when no owner in the group subscribes.
            f"{SUBSCRIBED.format(owner='x.owner_id')} AS subscribed, "
            # Saves the outbox write-back's wake-up a round trip when no row came from an outbox.
            f"(w.trigger_type = '{OUTBOX_TRIGGER}') AS outbox",
            *_outcome_arrays(outcomes),
        )
        await record_delivery_outcomes(conn, [r for r in rows if r["internal"]])
        await after_terminal(conn, [r for r in rows if r["status"] in TERMINAL])


def _outcome_arrays(outcomes: list[dict[str, Any]]) -> tuple[list[Any], ...]:
    return (
        [o["id"] for o in outcomes],
        [o["status"] for o in outcomes],
        [o.get("result") for o in outcomes],
        [o.get("error") for o in outcomes],
        [o.get("retry_in_s") for o in outcomes],
    )


@dataclass(frozen=True, slots=True)
class Execution:
    """An execution as its owner may see it."""

    id: UUID
    seq: int
    workflow_id: UUID
    event_id: UUID | None
    replay_of: UUID | None
    status: str
    trigger_data: Any
    result: Any
    error: str | None
    attempts: int
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    next_attempt_at: datetime | None
    temporal_workflow_id: str | None
    temporal_run_id: str | None


_COLUMNS = (
    "id, seq, workflow_id, event_id, replay_of, status, trigger_data, result, error, attempts, "
    "created_at, started_at, finished_at, next_attempt_at, temporal_workflow_id, temporal_run_id"
)


async def list_for_workflow(
    conn: asyncpg.Connection,
    owner_id: UUID,
    workflow_id: UUID,
    *,
    limit: int,
    after_seq: int | None = None,
    status: str | None = None,
) -> list[Execution]:
    """A page of a workflow's executions, newest first (limit+1 rows)."""
    rows = await conn.fetch(
        f"SELECT {_COLUMNS} FROM executions WHERE workflow_id = $1 AND owner_id = $2 "
        "AND ($3::bigint IS NULL OR seq < $3) AND ($4::text IS NULL OR status = $4) "
        "ORDER BY seq DESC LIMIT $5",
        workflow_id,
        owner_id,
        after_seq,
        status,
        limit + 1,
    )
    return rows_of(Execution, rows)


async def list_for_event(conn: asyncpg.Connection, owner_id: UUID, event_id: UUID) -> list[Execution]:
    """Every execution an event produced (first runs and replays)."""
    rows = await conn.fetch(
        f"SELECT {_COLUMNS} FROM executions WHERE event_id = $1 AND owner_id = $2 ORDER BY seq",
        event_id,
        owner_id,
    )
    return rows_of(Execution, rows)


async def get_execution(conn: asyncpg.Connection, owner_id: UUID, execution_id: UUID) -> Execution:
    """One of the owner's executions; `NotFound` if the owner has no such execution."""
    row = await conn.fetchrow(
        f"SELECT {_COLUMNS} FROM executions WHERE id = $1 AND owner_id = $2", execution_id, owner_id
    )
    if row is None:
        raise NotFound("execution")
    return row_of(Execution, row)


async def lock_for_cancel(conn: asyncpg.Connection, owner_id: UUID, execution_id: UUID) -> asyncpg.Record | None:
    """One of the owner's executions with its workflow's action type, row-locked (in a transaction)."""
    row: asyncpg.Record | None = await conn.fetchrow(
        "SELECT x.id, x.status, x.next_attempt_at, x.cancel_requested_at, w.action_type FROM executions x "
        "JOIN workflows w ON w.id = x.workflow_id WHERE x.id = $1 AND x.owner_id = $2 FOR UPDATE OF x",
        execution_id,
        owner_id,
    )
    return row


async def mark_cancelled(conn: asyncpg.Connection, execution_id: UUID, reason: str) -> None:
    """Cancel an execution that has no attempt in flight (queued, or waiting for a retry);
    call inside a transaction (`after_terminal` runs in it)."""
    rows = await conn.fetch(
        "UPDATE executions SET status = 'cancelled', finished_at = now(), next_attempt_at = NULL, error = $2, "
        "cancel_requested_at = coalesce(cancel_requested_at, now()) "
        f"WHERE id = $1 AND status IN ('queued', 'running') RETURNING {RETURNING}",
        execution_id,
        reason,
    )
    await after_terminal(conn, rows)


async def request_cancel(conn: asyncpg.Connection, execution_id: UUID) -> None:
    """Ask a running execution to stop at its next checkpoint (newsletters: between batches)."""
    await conn.execute(
        "UPDATE executions SET cancel_requested_at = coalesce(cancel_requested_at, now()) WHERE id = $1",
        execution_id,
    )


async def list_for_owner(
    conn: asyncpg.Connection,
    owner_id: UUID,
    *,
    limit: int,
    after_seq: int | None = None,
    status: str | None = None,
) -> list[Execution]:
    """A page of the owner's executions across all workflows, newest first (limit+1 rows)."""
    rows = await conn.fetch(
        f"SELECT {_COLUMNS} FROM executions WHERE owner_id = $1 "
        "AND ($2::bigint IS NULL OR seq < $2) AND ($3::text IS NULL OR status = $3) "
        # Deliveries to subscriptions are listed with their subscription, not here.
        "AND NOT EXISTS (SELECT 1 FROM workflows w WHERE w.id = executions.workflow_id AND w.internal) "
        "ORDER BY seq DESC LIMIT $4",
        owner_id,
        after_seq,
        status,
        limit + 1,
    )
    return rows_of(Execution, rows)
