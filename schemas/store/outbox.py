"""hookyard's side of the database outbox (trigger `postgres.outbox`, migration 0013).

`outbox_claims` holds one row per claim of an owner's row: its generation, the event that
carries it, and whether its outcome was written back. `outbox_health` is one row per outbox
workflow: the poll lease (replicas never poll one workflow at once) and what the operator sees.
The protocol is described in docs/architecture.md ("Database outbox").
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

import asyncpg
import orjson

from schemas.store.events import NewEvent, insert_events
from schemas.store.rows import row_of, rows_of

TRIGGER_TYPE = "postgres.outbox"
# NOTIFY'd when an execution of an outbox event ends: the write-back runs at once.
WRITE_BACK_CHANNEL = "hookyard_outbox_write_back"
SOURCE_TYPE = "outbox"
# Rows hookyard skips in one poll (open claims, retries not yet due or used up) at most.
MAX_SKIPPED = 10_000


@dataclass(frozen=True, slots=True)
class OutboxPoll:
    """A leased outbox workflow: what one poll works from."""

    workflow_id: UUID
    owner_id: UUID
    trigger_config: dict[str, Any]
    active: bool
    failures: int


@dataclass(frozen=True, slots=True)
class ClaimedRow:
    """A row locked in the owner's database, to be claimed in hookyard."""

    row_id: str
    claimed_from: str
    body: dict[str, Any]


@dataclass(frozen=True, slots=True)
class NewClaim:
    """A claim recorded in hookyard, with the event that carries it."""

    row_id: str
    generation: int
    event_id: UUID


@dataclass(frozen=True, slots=True)
class FinishedClaim:
    """An open claim whose execution ended (or whose event will never run): due for write-back.

    `outcome` is `sent`, `failed` or `released` (nothing ran and nothing will: the row is put
    back to pending, e.g. its workflow was deactivated before the row was tried).
    """

    id: int
    workflow_id: UUID
    credential_id: UUID
    table_name: str
    row_id: str
    generation: int
    outcome: str
    result: Any
    error: str | None
    writeback_attempts: int


@dataclass(frozen=True, slots=True)
class OutboxHealth:
    """Poll health of one outbox workflow, as the API and metrics show it."""

    last_poll_at: datetime | None
    last_success_at: datetime | None
    next_poll_at: datetime
    last_rows_claimed: int
    rows_claimed_total: int
    rows_written_total: int
    due_rows: int | None
    oldest_due_lag_s: float | None
    last_error: str | None
    last_error_at: datetime | None
    failures: int
    open_claims: int
    writeback_pending: int


@dataclass(frozen=True, slots=True)
class OutboxSource:
    """The owner's row an event was made from."""

    table_name: str
    row_id: str
    generation: int
    claimed_from: str
    state: str
    outcome: str | None
    claimed_at: datetime
    written_back_at: datetime | None


# The owner's view of a workflow's polls, embedded in the workflow row (`h`: outbox_health).
HEALTH_JSON = (
    "jsonb_build_object('last_poll_at', h.last_poll_at, 'last_success_at', h.last_success_at, "
    "'next_poll_at', h.next_poll_at, 'rows_claimed', h.last_rows_claimed, 'rows_claimed_total', h.rows_claimed_total, "
    "'rows_written_total', h.rows_written_total, 'due_rows', h.due_rows, 'oldest_due_lag_s', h.oldest_due_lag_s, "
    "'last_error', h.last_error, 'last_error_at', h.last_error_at, 'failures', h.failures, "
    "'open_claims', (SELECT count(*) FROM outbox_claims c WHERE c.workflow_id = h.workflow_id AND c.state = 'claimed'))"
)


async def wake_write_back(conn: asyncpg.Connection, rows: Sequence[asyncpg.Record]) -> None:
    """Executions just ended (`after_terminal`): wake the outbox write-back if one carried a claimed row.

    Free when the statement that ended them says none was an outbox workflow's (`outbox`
    column, as the outcome write returns it); rows without that column cost one statement.
    """
    rows = [r for r in rows if r.get("outbox", True) and r["event_id"] is not None and r["replay_of"] is None]
    if rows:
        await conn.execute(
            "SELECT pg_notify($2, '') WHERE EXISTS (SELECT 1 FROM outbox_claims "
            "WHERE event_id = ANY($1::uuid[]) AND state = 'claimed')",
            [r["event_id"] for r in rows],
            WRITE_BACK_CHANNEL,
        )


def dedup_key(credential_id: UUID, table: str, row_id: str, generation: int) -> str:
    """The event's dedup key: a claim generation of a row is stored at most once."""
    return f"{credential_id}:{table}:{row_id}:{generation}"


async def lease_polls(conn: asyncpg.Connection, limit: int, lease_s: float) -> list[OutboxPoll]:
    """Lease outbox workflows due for a poll (`SKIP LOCKED`: replicas take different ones).

    Active workflows get a health row on first sight; one changed since its last poll (the
    owner fixed its config, say) is due at once, whatever its backoff. Only active workflows
    are polled; what an inactive one claimed is still written back (`workflows_to_write_back`).
    """
    async with conn.transaction():
        await conn.execute(
            "INSERT INTO outbox_health (workflow_id) SELECT id FROM workflows w "
            "WHERE trigger_type = $1 AND active AND deleted_at IS NULL "
            "AND NOT EXISTS (SELECT 1 FROM outbox_health h WHERE h.workflow_id = w.id) ON CONFLICT DO NOTHING",
            TRIGGER_TYPE,
        )
        rows = await conn.fetch(
            "WITH due AS (SELECT h.workflow_id FROM outbox_health h JOIN workflows w ON w.id = h.workflow_id "
            "WHERE (h.next_poll_at <= now() OR w.updated_at > coalesce(h.last_poll_at, '-infinity')) "
            "AND (h.lease_until IS NULL OR h.lease_until <= now()) "
            "AND w.trigger_type = $1 AND w.active AND w.deleted_at IS NULL "
            "ORDER BY h.next_poll_at LIMIT $2 FOR UPDATE OF h SKIP LOCKED) "
            "UPDATE outbox_health h SET lease_until = now() + make_interval(secs => $3) FROM due, workflows w "
            "WHERE h.workflow_id = due.workflow_id AND w.id = h.workflow_id "
            "RETURNING w.id AS workflow_id, w.owner_id, w.trigger_config, w.active, h.failures",
            TRIGGER_TYPE,
            limit,
            lease_s,
        )
    return rows_of(OutboxPoll, rows)


async def record_poll(
    conn: asyncpg.Connection,
    workflow_id: UUID,
    *,
    claimed: int,
    due_rows: int | None,
    lag_s: float | None,
    error: str | None,
    next_in_s: float,
) -> None:
    """End a poll: its outcome into the health row, the lease released, the next poll set."""
    await conn.execute(
        "UPDATE outbox_health SET lease_until = NULL, last_poll_at = now(), "
        "next_poll_at = now() + make_interval(secs => $6::float8), "
        "last_rows_claimed = $2::int, rows_claimed_total = rows_claimed_total + $2::int, "
        "due_rows = CASE WHEN $5::text IS NULL THEN $3::int ELSE due_rows END, "
        "oldest_due_lag_s = CASE WHEN $5::text IS NULL THEN $4::float8 ELSE oldest_due_lag_s END, "
        "last_success_at = CASE WHEN $5::text IS NULL THEN now() ELSE last_success_at END, "
        "last_error = coalesce($5, CASE WHEN failures = 0 THEN NULL ELSE last_error END), "
        "last_error_at = CASE WHEN $5::text IS NULL THEN last_error_at ELSE now() END, "
        "failures = CASE WHEN $5::text IS NULL THEN 0 ELSE failures + 1 END "
        "WHERE workflow_id = $1",
        workflow_id,
        claimed,
        due_rows,
        lag_s,
        error,
        next_in_s,
    )


async def poll_now(conn: asyncpg.Connection, workflow_ids: Sequence[UUID]) -> None:
    """Bring these workflows' next poll forward to now (a LISTEN wake-up)."""
    await conn.execute(
        "UPDATE outbox_health SET next_poll_at = now() WHERE workflow_id = ANY($1::uuid[]) AND next_poll_at > now()",
        list(workflow_ids),
    )


async def next_poll_in(conn: asyncpg.Connection) -> float | None:
    """Seconds until the earliest outbox poll falls due (0 if one is due); None if there is none."""
    due: float | None = await conn.fetchval(
        "SELECT greatest(0, extract(epoch FROM min(greatest(h.next_poll_at, coalesce(h.lease_until, now()))) "
        "- now()))::float8 FROM outbox_health h JOIN workflows w ON w.id = h.workflow_id "
        "WHERE w.trigger_type = $1 AND w.active AND w.deleted_at IS NULL",
        TRIGGER_TYPE,
    )
    return due


async def skipped_rows(
    conn: asyncpg.Connection,
    credential_id: UUID,
    table: str,
    *,
    max_attempts: int,
    retry_interval_s: float,
    count_failures: bool,
    lease_timeout_s: float,
) -> list[str]:
    """Row ids a poll must not claim: held by an open claim, or failed rows not to retry yet.

    An open claim whose row the owner's side marked PROCESSING is skipped only once that
    row's lease could have run out (after half of `lease_timeout_s`, so clocks may differ);
    before that the row is not due anyway, and the list stays short however many rows run.
    With `count_failures` (no attempts column), hookyard counts a row's failed claims itself:
    a row that failed `max_attempts` times is never retried, and one is retried only
    `retry_interval_s` after its last failure was written.
    """
    rows = await conn.fetch(
        "SELECT row_id FROM outbox_claims WHERE credential_id = $1 AND table_name = $2 AND state = 'claimed' "
        "AND (NOT owner_marked OR claimed_at <= now() - make_interval(secs => $7::float8 / 2)) "
        "UNION SELECT row_id FROM outbox_claims WHERE credential_id = $1 AND table_name = $2 AND outcome = 'failed' "
        "GROUP BY row_id HAVING ($5 AND count(*) >= $3) "
        "OR max(written_back_at) > now() - make_interval(secs => $4::float8) LIMIT $6",
        credential_id,
        table,
        max_attempts,
        retry_interval_s,
        count_failures,
        MAX_SKIPPED,
        lease_timeout_s,
    )
    return [r["row_id"] for r in rows]


async def mark_owner_side(
    conn: asyncpg.Connection, claims: Sequence[NewClaim], credential_id: UUID, table: str
) -> None:
    """The owner's side committed these claims' rows as PROCESSING."""
    await conn.execute(
        "UPDATE outbox_claims SET owner_marked = true WHERE credential_id = $1 AND table_name = $2 "
        "AND state = 'claimed' AND row_id = ANY($3::text[])",
        credential_id,
        table,
        [c.row_id for c in claims],
    )


async def failures_of(conn: asyncpg.Connection, credential_id: UUID, table: str, row_ids: list[str]) -> dict[str, int]:
    """How many claims of each row ended failed (the attempt number of the next one is this + 1)."""
    rows = await conn.fetch(
        "SELECT row_id, count(*)::int AS n FROM outbox_claims WHERE credential_id = $1 AND table_name = $2 "
        "AND row_id = ANY($3::text[]) AND outcome = 'failed' GROUP BY row_id",
        credential_id,
        table,
        row_ids,
    )
    return {r["row_id"]: r["n"] for r in rows}


async def record_claims(
    conn: asyncpg.Connection,
    poll: OutboxPoll,
    credential_id: UUID,
    table: str,
    rows: Sequence[ClaimedRow],
) -> list[NewClaim]:
    """Claim rows in hookyard and store one event per row, in one transaction (call it inside one).

    Each row gets the next generation of its (credential, table, row id); the event's dedup
    key carries it, so storing a claim twice stores one event. The unique index on open claims
    refuses a second open claim of a row (a `UniqueViolationError` rolls the poll back).
    """
    if not rows:
        return []
    ids = [r.row_id for r in rows]
    generations = {
        r["row_id"]: r["g"]
        for r in await conn.fetch(
            "SELECT row_id, max(generation) AS g FROM outbox_claims WHERE credential_id = $1 AND table_name = $2 "
            "AND row_id = ANY($3::text[]) GROUP BY row_id",
            credential_id,
            table,
            ids,
        )
    }
    events: list[NewEvent] = []
    claims: list[tuple[ClaimedRow, int, str]] = []
    for row in rows:
        generation = generations.get(row.row_id, 0) + 1
        key = dedup_key(credential_id, table, row.row_id, generation)
        body = {**row.body, "generation": generation}
        events.append(
            NewEvent(poll.owner_id, SOURCE_TYPE, str(poll.workflow_id), key, {}, orjson.dumps(body), {"outbox": True})
        )
        claims.append((row, generation, key))
    stored = await insert_events(conn, events)
    event_ids = [stored[(SOURCE_TYPE, str(poll.workflow_id), key)].event_id for _, _, key in claims]
    await conn.execute(
        "INSERT INTO outbox_claims (owner_id, workflow_id, credential_id, table_name, row_id, generation, event_id, "
        "claimed_from) SELECT $1, $2, $3, $4, u.row_id, u.generation, u.event_id, u.claimed_from "
        "FROM unnest($5::text[], $6::int[], $7::uuid[], $8::text[]) AS u(row_id, generation, event_id, claimed_from)",
        poll.owner_id,
        poll.workflow_id,
        credential_id,
        table,
        [c[0].row_id for c in claims],
        [c[1] for c in claims],
        event_ids,
        [c[0].claimed_from for c in claims],
    )
    return [NewClaim(c[0].row_id, c[1], eid) for c, eid in zip(claims, event_ids, strict=True)]


# Open claims due for write-back: their execution ended, or their event will never run one.
_DUE_FOR_WRITE_BACK = """
FROM outbox_claims c
LEFT JOIN events e ON e.id = c.event_id
LEFT JOIN executions x ON x.event_id = c.event_id AND x.workflow_id = c.workflow_id AND x.replay_of IS NULL
WHERE c.state = 'claimed' AND (c.writeback_retry_at IS NULL OR c.writeback_retry_at <= now())
  AND (x.status IN ('succeeded', 'failed', 'cancelled')
       OR (x.id IS NULL AND (e.id IS NULL OR e.status IN ('unmatched', 'rejected', 'dispatched'))))
"""

_FINISHED = f"""
SELECT c.id, c.workflow_id, c.credential_id, c.table_name, c.row_id, c.generation, c.writeback_attempts,
       CASE WHEN x.status = 'succeeded' THEN 'sent'
            -- Cancelled before any attempt (the workflow was deactivated): the row was never tried.
            WHEN x.status = 'cancelled' AND x.attempts = 0 THEN 'released'
            WHEN x.status IN ('failed', 'cancelled') THEN 'failed'
            ELSE 'released' END AS outcome,
       x.result, CASE WHEN x.status = 'cancelled' THEN coalesce(x.error, 'cancelled') ELSE x.error END AS error
{_DUE_FOR_WRITE_BACK} AND c.workflow_id = $1
ORDER BY c.id LIMIT $2
FOR UPDATE OF c SKIP LOCKED
"""


async def lock_finished(conn: asyncpg.Connection, workflow_id: UUID, limit: int) -> list[FinishedClaim]:
    """Lock a workflow's claims due for write-back (call inside a transaction that records them).

    The row locks are held while the owner's rows are written, so two replicas never write
    back one claim, and a claim is closed in the same transaction as its write is confirmed.
    """
    rows = await conn.fetch(_FINISHED, workflow_id, limit)
    return rows_of(FinishedClaim, rows)


async def workflows_to_write_back(conn: asyncpg.Connection, limit: int) -> list[tuple[UUID, UUID]]:
    """(workflow id, owner id) of workflows with claims due for write-back, any state of the workflow."""
    rows = await conn.fetch(f"SELECT DISTINCT c.workflow_id, c.owner_id {_DUE_FOR_WRITE_BACK} LIMIT $1", limit)
    return [(r["workflow_id"], r["owner_id"]) for r in rows]


async def record_written_many(
    conn: asyncpg.Connection, workflow_id: UUID, claims: Sequence[FinishedClaim], results: Sequence[Any]
) -> int:
    """Close claims of one workflow: their outcomes are in the owner's rows; returns how many closed.

    Conditioned on each claim being open at its generation, so a stale write-back never closes
    a newer claim.
    """
    rows = await conn.fetch(
        "UPDATE outbox_claims c SET state = 'written_back', outcome = u.outcome, result = u.result, "
        "written_back_at = now(), writeback_error = NULL, writeback_retry_at = NULL "
        "FROM unnest($1::bigint[], $2::int[], $3::text[], $4::jsonb[]) AS u(id, generation, outcome, result) "
        "WHERE c.id = u.id AND c.generation = u.generation AND c.state = 'claimed' RETURNING c.id",
        [c.id for c in claims],
        [c.generation for c in claims],
        [c.outcome for c in claims],
        list(results),
    )
    if rows:
        await conn.execute(
            "UPDATE outbox_health SET rows_written_total = rows_written_total + $2::int WHERE workflow_id = $1",
            workflow_id,
            len(rows),
        )
    return len(rows)


async def record_writeback_failed(conn: asyncpg.Connection, claim_ids: list[int], error: str) -> None:
    """The owner's database refused or was down: retry these write-backs with backoff (1 s to 60 s)."""
    await conn.execute(
        "UPDATE outbox_claims SET writeback_attempts = writeback_attempts + 1, writeback_error = $2, "
        "writeback_retry_at = now() + make_interval(secs => least(60, power(2, least(writeback_attempts, 6)))) "
        "WHERE id = ANY($1::bigint[]) AND state = 'claimed'",
        claim_ids,
        error[:500],
    )


async def get_health(conn: asyncpg.Connection, owner_id: UUID, workflow_id: UUID) -> OutboxHealth | None:
    """An owner's outbox workflow's poll health; None before its first poll (or for another owner)."""
    row = await conn.fetchrow(
        "SELECT h.last_poll_at, h.last_success_at, h.next_poll_at, h.last_rows_claimed, h.rows_claimed_total, "
        "h.rows_written_total, h.due_rows, h.oldest_due_lag_s, h.last_error, h.last_error_at, h.failures, "
        "(SELECT count(*)::int FROM outbox_claims c WHERE c.workflow_id = h.workflow_id AND c.state = 'claimed') "
        "AS open_claims, "
        "(SELECT count(*)::int FROM outbox_claims c WHERE c.workflow_id = h.workflow_id AND c.state = 'claimed' "
        "AND c.writeback_attempts > 0) AS writeback_pending "
        "FROM outbox_health h JOIN workflows w ON w.id = h.workflow_id WHERE h.workflow_id = $1 AND w.owner_id = $2",
        workflow_id,
        owner_id,
    )
    return None if row is None else row_of(OutboxHealth, row)


async def all_health(conn: asyncpg.Connection) -> list[tuple[UUID, OutboxHealth]]:
    """Every live outbox workflow's health (for metrics)."""
    rows = await conn.fetch(
        "SELECT h.workflow_id, h.last_poll_at, h.last_success_at, h.next_poll_at, h.last_rows_claimed, "
        "h.rows_claimed_total, h.rows_written_total, h.due_rows, h.oldest_due_lag_s, h.last_error, h.last_error_at, "
        "h.failures, 0 AS open_claims, 0 AS writeback_pending FROM outbox_health h "
        "JOIN workflows w ON w.id = h.workflow_id WHERE w.deleted_at IS NULL"
    )
    out: list[tuple[UUID, OutboxHealth]] = []
    for r in rows:
        values = dict(r.items())
        out.append((values.pop("workflow_id"), OutboxHealth(**values)))
    return out


async def source_of(conn: asyncpg.Connection, owner_id: UUID, event_id: UUID) -> OutboxSource | None:
    """The owner's row an event was made from; None for events of other sources."""
    row = await conn.fetchrow(
        "SELECT table_name, row_id, generation, claimed_from, state, outcome, claimed_at, written_back_at "
        "FROM outbox_claims WHERE event_id = $1 AND owner_id = $2",
        event_id,
        owner_id,
    )
    return None if row is None else row_of(OutboxSource, row)


async def record_refused(
    conn: asyncpg.Connection, poll: OutboxPoll, credential_id: UUID, table: str, row_ids: Sequence[str]
) -> None:
    """Rows failed at once without running (too large to carry): closed failed claims, so they
    count as attempts like any failure."""
    if not row_ids:
        return
    await conn.execute(
        "INSERT INTO outbox_claims (owner_id, workflow_id, credential_id, table_name, row_id, generation, "
        "claimed_from, state, outcome, written_back_at) "
        "SELECT $1, $2, $3, $4, r.row_id, coalesce((SELECT max(generation) FROM outbox_claims c "
        "WHERE c.credential_id = $3 AND c.table_name = $4 AND c.row_id = r.row_id), 0) + 1, "
        "'', 'written_back', 'failed', now() FROM unnest($5::text[]) AS r(row_id)",
        poll.owner_id,
        poll.workflow_id,
        credential_id,
        table,
        list(row_ids),
    )


async def trigger_config_of(conn: asyncpg.Connection, workflow_id: UUID) -> dict[str, Any]:
    """A workflow's trigger config, whatever its state (its claims are written back even when deleted)."""
    config: dict[str, Any] = await conn.fetchval("SELECT trigger_config FROM workflows WHERE id = $1", workflow_id)
    return config


@dataclass(frozen=True, slots=True)
class ListeningWorkflow:
    """An active outbox workflow that names a LISTEN channel."""

    workflow_id: UUID
    owner_id: UUID
    credential_id: UUID
    channel: str


async def listening_workflows(conn: asyncpg.Connection) -> list[ListeningWorkflow]:
    """Active outbox workflows with a LISTEN channel (at most 1,000)."""
    rows = await conn.fetch(
        "SELECT id AS workflow_id, owner_id, (trigger_config->>'credential_id')::uuid AS credential_id, "
        "trigger_config->>'listen_channel' AS channel FROM workflows WHERE trigger_type = $1 AND active "
        "AND deleted_at IS NULL AND trigger_config ? 'listen_channel' ORDER BY seq LIMIT 1000",
        TRIGGER_TYPE,
    )
    return rows_of(ListeningWorkflow, rows)
