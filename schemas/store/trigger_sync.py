"""Bookkeeping of trigger lifecycle sync: which workflows' outside state lags their row.

A change to a workflow's trigger, config, active flag or deletion bumps `sync_version` (a
database trigger, migration 0005). A sync loop claims lagging rows with a lease, converges the
outside state, and records the version it reached or the error that stopped it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from uuid import UUID

import asyncpg

from schemas.store import notification_events

SYNC_CHANNEL = "hookyard_trigger_sync"

_LAGGING = (
    "sync_version > synced_version AND (sync_lease_until IS NULL OR sync_lease_until <= now()) "
    "AND (sync_retry_at IS NULL OR sync_retry_at <= now())"
)


_CLAIMED = (
    "id, owner_id, trigger_type, trigger_config, active, (deleted_at IS NOT NULL) AS deleted, "
    "sync_version, sync_attempts, synced_trigger_type, synced_trigger_config"
)


async def claim(
    conn: asyncpg.Connection,
    hooked_types: Sequence[str],
    limit: int,
    lease_s: float,
    max_hooked: int | None = None,
) -> tuple[int, list[asyncpg.Record], bool]:
    """Take a batch of lagging rows: settle those with nothing outside, lease the others.

    Rows whose trigger types (now and at the last sync) keep no outside state are marked synced
    at once. The rest, at most `max_hooked` of them, are leased for `lease_s` and returned; other
    loops skip them meanwhile.
    The lease is committed before any hook runs, so no row lock is held while hooks talk to
    other services (that would stall dispatch and API updates of the same workflows). Returns
    (rows settled, rows leased, whether more rows are waiting).
    """
    async with conn.transaction():
        # Select first: an UPDATE, even of no rows, bumps the routing cache version.
        found = await conn.fetch(
            f"SELECT id, (trigger_type = ANY($1::text[]) OR synced_trigger_type = ANY($1::text[])) AS hooked "
            f"FROM workflows WHERE {_LAGGING} ORDER BY seq LIMIT $2 FOR UPDATE SKIP LOCKED",
            list(hooked_types),
            limit,
        )
        plain = [r["id"] for r in found if not r["hooked"]]
        hooked = [r["id"] for r in found if r["hooked"]]
        more = len(found) >= limit or (max_hooked is not None and len(hooked) > max_hooked)
        hooked = hooked if max_hooked is None else hooked[:max_hooked]
        if plain:
            await conn.execute(
                "UPDATE workflows SET synced_version = sync_version, sync_error = NULL, sync_attempts = 0, "
                "sync_retry_at = NULL, synced_trigger_type = NULL, synced_trigger_config = NULL "
                "WHERE id = ANY($1::uuid[])",
                plain,
            )
        rows: list[asyncpg.Record] = []
        if hooked:
            rows = await conn.fetch(
                "UPDATE workflows SET sync_lease_until = now() + make_interval(secs => $2) "
                f"WHERE id = ANY($1::uuid[]) RETURNING {_CLAIMED}",
                hooked,
                lease_s,
            )
    return len(plain), rows, more


async def record_synced(
    conn: asyncpg.Connection,
    workflow_id: UUID,
    version: int,
    trigger_type: str | None,
    trigger_config: dict[str, Any] | None,
) -> None:
    """The outside state now matches `version` of the row, set up for this type and config.

    A row changed meanwhile keeps lagging (its version moved on) and is synced again.
    """
    await conn.execute(
        "UPDATE workflows SET synced_version = GREATEST(synced_version, $2), sync_lease_until = NULL, "
        "sync_error = CASE WHEN sync_version = $2 THEN NULL ELSE sync_error END, "
        "sync_attempts = CASE WHEN sync_version = $2 THEN 0 ELSE sync_attempts END, "
        "synced_trigger_type = $3, synced_trigger_config = $4 WHERE id = $1",
        workflow_id,
        version,
        trigger_type,
        trigger_config,
    )


async def record_failed(
    conn: asyncpg.Connection, workflow_id: UUID, version: int, error: str, retry_in_s: float
) -> None:
    """Syncing `version` failed: show why and retry later (at once if the row changed meanwhile).

    An error that is new for the workflow (it had none, or another) is reported to its owner
    (trigger.sync_failed) in the same transaction: once per failure episode, not per retry.
    """
    async with conn.transaction():
        row = await conn.fetchrow(
            "UPDATE workflows w SET sync_lease_until = NULL, "
            "sync_error = CASE WHEN w.sync_version = $2 THEN $3 ELSE w.sync_error END, "
            "sync_attempts = CASE WHEN w.sync_version = $2 THEN w.sync_attempts + 1 ELSE w.sync_attempts END, "
            "sync_retry_at = CASE WHEN w.sync_version = $2 THEN now() + make_interval(secs => $4) "
            "ELSE w.sync_retry_at END "
            "FROM (SELECT id, sync_error FROM workflows WHERE id = $1 FOR UPDATE) old WHERE w.id = old.id "
            "RETURNING w.id AS workflow_id, w.name AS workflow_name, w.owner_id, w.trigger_type, w.action_type, "
            "w.sync_attempts, (w.sync_version = $2 AND old.sync_error IS DISTINCT FROM $3 "
            "AND w.deleted_at IS NULL) AS new_error",
            workflow_id,
            version,
            error,
            retry_in_s,
        )
        if row is not None and row["new_error"]:
            await notification_events.trigger_sync_failed(conn, row, error)


async def next_due_in(conn: asyncpg.Connection) -> float | None:
    """Seconds until the earliest lagging row may be tried again (0 if one may now); None if none lag."""
    due: float | None = await conn.fetchval(
        "SELECT greatest(0, extract(epoch FROM min(greatest(coalesce(sync_retry_at, now()), "
        "coalesce(sync_lease_until, now())) - now())))::float8 FROM workflows WHERE sync_version > synced_version"
    )
    return due


async def trigger_of(conn: asyncpg.Connection, workflow_id: UUID) -> asyncpg.Record | None:
    """A live workflow's owner and trigger, looked up by id alone (for ingest paths named by it)."""
    row: asyncpg.Record | None = await conn.fetchrow(
        "SELECT id, owner_id, trigger_type, trigger_config, active FROM workflows WHERE id = $1 AND deleted_at IS NULL",
        workflow_id,
    )
    return row
