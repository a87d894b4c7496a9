"""Newsletters: the config snapshot of each send and the state of every recipient."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

import asyncpg

from schemas.store import notification_events
from schemas.store.terminal import RETURNING, after_terminal

# Recipients still to be sent to; `sending` ones were cut off mid-request by a lost worker.
OPEN_STATES = ("pending", "sending")
STATES = ("pending", "sending", "sent", "failed", "unknown", "cancelled")


@dataclass(frozen=True, slots=True)
class NewRecipient:
    """A recipient as listed; `error` set means unusable: stored as failed, never sent."""

    index: int
    address: str
    vars: dict[str, Any]
    error: str | None = None


async def create(
    conn: asyncpg.Connection,
    execution_id: UUID,
    config: dict[str, Any],
    credential_id: UUID | None,
    send_at: datetime | None,
    recipients: Sequence[NewRecipient],
    duplicates: int,
) -> str | None:
    """Store the newsletter and its recipients once; a repeated call changes nothing.

    Returns the execution's status (None if it does not exist): only a `running` execution may
    go on to send, anything else was cancelled or finished meanwhile.
    """
    async with conn.transaction():
        # Same lock order as a cancel (execution row first), so the two never interleave.
        status: str | None = await conn.fetchval("SELECT status FROM executions WHERE id = $1 FOR UPDATE", execution_id)
        if status != "running":
            return status
        created = await conn.fetchval(
            "INSERT INTO newsletters (execution_id, config, credential_id, send_at, total, duplicates) "
            "VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (execution_id) DO NOTHING RETURNING true",
            execution_id,
            config,
            credential_id,
            send_at,
            len(recipients),
            duplicates,
        )
        if created:
            await conn.execute(
                "INSERT INTO newsletter_recipients (execution_id, idx, address, vars, state, error) "
                "SELECT $1, r.idx, r.address, r.vars, CASE WHEN r.error IS NULL THEN 'pending' ELSE 'failed' END, "
                "r.error FROM unnest($2::int[], $3::text[], $4::jsonb[], $5::text[]) AS r(idx, address, vars, error)",
                execution_id,
                [r.index for r in recipients],
                [r.address for r in recipients],
                [r.vars for r in recipients],
                [r.error for r in recipients],
            )
    return status


async def set_temporal_ids(conn: asyncpg.Connection, execution_id: UUID, workflow_id: str, run_id: str | None) -> None:
    """Point the execution at the newsletter's own Temporal workflow."""
    await conn.execute(
        "UPDATE executions SET temporal_workflow_id = $2, temporal_run_id = $3 WHERE id = $1",
        execution_id,
        workflow_id,
        run_id,
    )


async def load(conn: asyncpg.Connection, execution_id: UUID) -> asyncpg.Record | None:
    """The newsletter with what its messages are made from: config, trigger data, workflow name."""
    row: asyncpg.Record | None = await conn.fetchrow(
        "SELECT n.config, n.credential_id, n.total, n.duplicates, x.owner_id, x.workflow_id, x.trigger_data, "
        "x.attempts, w.name AS workflow_name FROM newsletters n "
        "JOIN executions x ON x.id = n.execution_id JOIN workflows w ON w.id = x.workflow_id "
        "WHERE n.execution_id = $1",
        execution_id,
    )
    return row


async def claim_batch(conn: asyncpg.Connection, execution_id: UUID, limit: int) -> tuple[str, list[asyncpg.Record]]:
    """The next open recipients, in list order, unless the send must stop.

    Returns ("send", rows), ("cancel", []) when the owner asked to stop, or ("finished", [])
    when the execution is no longer running (its pending recipients are then marked cancelled).
    """
    async with conn.transaction():
        execution = await conn.fetchrow(
            "SELECT status, cancel_requested_at FROM executions WHERE id = $1 FOR UPDATE", execution_id
        )
        if execution is None or execution["status"] != "running":
            await cancel_open(conn, execution_id)
            return "finished", []
        if execution["cancel_requested_at"] is not None:
            return "cancel", []
        first = await conn.fetchval(
            "UPDATE newsletters SET started_at = now() WHERE execution_id = $1 AND started_at IS NULL RETURNING true",
            execution_id,
        )
        if first:  # a scheduled newsletter is now sending
            await conn.execute(
                "UPDATE executions SET result = coalesce(result, '{}'::jsonb) || '{\"status\": \"sending\"}'::jsonb "
                "WHERE id = $1",
                execution_id,
            )
        rows: list[asyncpg.Record] = await conn.fetch(
            "SELECT idx, address, vars, state, provider FROM newsletter_recipients "
            "WHERE execution_id = $1 AND state IN ('pending', 'sending') ORDER BY idx LIMIT $2",
            execution_id,
            limit,
        )
    return "send", rows


async def mark_sending(conn: asyncpg.Connection, execution_id: UUID, index: int, provider: str) -> None:
    """Recorded before a request to a provider that cannot deduplicate: a lost worker's retry
    then knows the recipient may have been sent to."""
    await conn.execute(
        "UPDATE newsletter_recipients SET state = 'sending', provider = $3, updated_at = now() "
        "WHERE execution_id = $1 AND idx = $2",
        execution_id,
        index,
        provider,
    )


async def record(
    conn: asyncpg.Connection,
    execution_id: UUID,
    index: int,
    state: str,
    provider: str | None,
    message_id: str | None,
    error: str | None,
) -> None:
    """A recipient's outcome: sent, failed or unknown (and newsletter.progress when due)."""
    # One statement, which also says whether a throttled progress notification may be due.
    due = await conn.fetchval(
        "WITH r AS (UPDATE newsletter_recipients SET state = $3, provider = coalesce($4, provider), "
        "message_id = $5, error = $6, updated_at = now() WHERE execution_id = $1 AND idx = $2 "
        f"RETURNING execution_id) SELECT {notification_events.PROGRESS_DUE} FROM r "
        "JOIN newsletters n USING (execution_id) JOIN executions x ON x.id = n.execution_id",
        execution_id,
        index,
        state,
        provider,
        message_id,
        error,
    )
    if due:
        await notification_events.newsletter_progress(conn, execution_id)


async def cancel_open(conn: asyncpg.Connection, execution_id: UUID) -> None:
    """Stop for good: pending recipients become cancelled; any cut off mid-request, unknown."""
    await conn.execute(
        "UPDATE newsletter_recipients SET state = CASE state WHEN 'pending' THEN 'cancelled' ELSE 'unknown' END, "
        "error = CASE state WHEN 'pending' THEN 'cancelled before it was sent' "
        "ELSE 'cancelled while a request to ' || coalesce(provider, 'the provider') || ' was unanswered' END, "
        "updated_at = now() WHERE execution_id = $1 AND state IN ('pending', 'sending')",
        execution_id,
    )


async def open_count(conn: asyncpg.Connection, execution_id: UUID) -> int:
    """Recipients still to be sent to."""
    count: int = await conn.fetchval(
        "SELECT count(*) FROM newsletter_recipients WHERE execution_id = $1 AND state IN ('pending', 'sending')",
        execution_id,
    )
    return count


async def state_counts(conn: asyncpg.Connection, execution_id: UUID) -> dict[str, int]:
    """Recipients per state (every state present, zero if none)."""
    rows = await conn.fetch(
        "SELECT state, count(*) AS n FROM newsletter_recipients WHERE execution_id = $1 GROUP BY state",
        execution_id,
    )
    counts = dict.fromkeys(STATES, 0)
    counts.update({r["state"]: r["n"] for r in rows})
    return counts


async def provider_counts(conn: asyncpg.Connection, execution_id: UUID) -> dict[str, int]:
    """Recipients sent to, per provider that accepted them."""
    rows = await conn.fetch(
        "SELECT provider, count(*) AS n FROM newsletter_recipients "
        "WHERE execution_id = $1 AND state = 'sent' GROUP BY provider ORDER BY provider",
        execution_id,
    )
    return {r["provider"] or "unknown": r["n"] for r in rows}


async def first_errors(conn: asyncpg.Connection, execution_id: UUID, limit: int) -> list[asyncpg.Record]:
    """The first recipients that were not sent to, with why."""
    rows: list[asyncpg.Record] = await conn.fetch(
        "SELECT idx, address, state, error FROM newsletter_recipients "
        "WHERE execution_id = $1 AND state IN ('failed', 'unknown') ORDER BY idx LIMIT $2",
        execution_id,
        limit,
    )
    return rows


async def progress(conn: asyncpg.Connection, execution_id: UUID) -> dict[str, Any] | None:
    """Where a newsletter stands, for the API; None if the execution is not a handed-over newsletter."""
    row = await conn.fetchrow(
        "SELECT n.total, n.duplicates, n.send_at, n.started_at, x.cancel_requested_at FROM newsletters n "
        "JOIN executions x ON x.id = n.execution_id WHERE n.execution_id = $1",
        execution_id,
    )
    if row is None:
        return None
    counts = await state_counts(conn, execution_id)
    return {
        "total": row["total"],
        "sent": counts["sent"],
        "failed": counts["failed"],
        "unknown": counts["unknown"],
        "cancelled": counts["cancelled"],
        "remaining": counts["pending"] + counts["sending"],
        "duplicates_skipped": row["duplicates"],
        "send_at": row["send_at"],
        "started_at": row["started_at"],
        "cancel_requested_at": row["cancel_requested_at"],
    }


async def started(conn: asyncpg.Connection, execution_id: UUID) -> bool | None:
    """Whether sending has begun; None if the newsletter has not been handed over yet."""
    row = await conn.fetchrow("SELECT started_at FROM newsletters WHERE execution_id = $1", execution_id)
    return None if row is None else row["started_at"] is not None


async def finish(
    conn: asyncpg.Connection, execution_id: UUID, status: str, result: dict[str, Any], error: str | None
) -> bool:
    """Write the execution's final status once; False if it had already finished."""
    async with conn.transaction():
        rows = await conn.fetch(
            "UPDATE executions SET status = $2, result = $3, error = $4, finished_at = now(), next_attempt_at = NULL "
            f"WHERE id = $1 AND status = 'running' RETURNING {RETURNING}",
            execution_id,
            status,
            result,
            error,
        )
        await after_terminal(conn, rows)
        if rows:
            await notification_events.newsletter_completed(conn, rows[0], result)
    return bool(rows)
