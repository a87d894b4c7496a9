"""Queries behind metrics and traces; kept cheap enough to run every few seconds."""

from __future__ import annotations

from uuid import UUID

import asyncpg


async def inbox_depth(conn: asyncpg.Connection) -> tuple[int, float]:
    """(events waiting for a dispatcher, age in seconds of the oldest waiting one).

    One pass over the waiting rows only, found through the partial index events_pending_idx.
    """
    row = await conn.fetchrow(
        "SELECT count(*) AS backlog, coalesce(extract(epoch FROM now() - min(received_at)), 0)::float8 AS lag "
        "FROM events WHERE status = 'received'"
    )
    assert row is not None
    return int(row["backlog"]), max(0.0, float(row["lag"]))


async def oldest_waiting_age(conn: asyncpg.Connection) -> float:
    """Age in seconds of the oldest event not yet resolved (0 when none wait).

    One row read through the partial index events_pending_idx, so probes may call it often
    whatever the backlog.
    """
    age = await conn.fetchval(
        "SELECT extract(epoch FROM now() - received_at)::float8 FROM events "
        "WHERE status = 'received' ORDER BY seq LIMIT 1"
    )
    return max(0.0, float(age or 0.0))


async def traceparents_for_executions(conn: asyncpg.Connection, execution_ids: list[UUID]) -> dict[UUID, str]:
    """The trace context stored with each execution's event: the API's span, else the sender's header."""
    rows = await conn.fetch(
        "SELECT x.id, coalesce(e.verification->>'traceparent', e.headers->>'traceparent') AS traceparent "
        "FROM executions x JOIN events e ON e.id = x.event_id WHERE x.id = ANY($1::uuid[])",
        execution_ids,
    )
    return {r["id"]: r["traceparent"] for r in rows if r["traceparent"]}
