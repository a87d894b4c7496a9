"""Bookkeeping of the reconciler: what Temporal was given long enough ago to be checked.

The reconciler (worker/dispatch/reconciler.py) leases one Temporal workflow id at a time (an
automation, a newsletter or a mailbox workflow) in `reconcile_leases`, asks Temporal whether it
runs, and hands back the rows it owns that are stranded. The lease doubles as the spacing of
checks: a workflow checked once is not looked at again before its lease ends.
"""

from __future__ import annotations

from collections.abc import Sequence
from uuid import UUID

import asyncpg

from schemas.store.events import EVENTS_CHANNEL

OPEN = ("queued", "running")
NEWSLETTER_PREFIX = "newsletter-"


def _unleased(key_sql: str) -> str:
    return (
        "NOT EXISTS (SELECT 1 FROM reconcile_leases l "
        f"WHERE l.temporal_workflow_id = {key_sql} AND l.lease_until > now())"
    )


_AUTOMATION_UNLEASED = _unleased("'automation-' || x.workflow_id::text")
_LANE_UNLEASED = _unleased("$3 || x.lane::text")  # $3: the lanes' id prefix (worker/automation/contract.py)
_MAILBOX_UNLEASED = _unleased("'gmail-mailbox-' || m.credential_id::text")


async def automations_to_check(conn: asyncpg.Connection, grace_s: float, limit: int) -> list[UUID]:
    """User workflows with executions handed to their own automation (not a lane) more than
    `grace_s` ago and still open."""
    rows = await conn.fetch(
        "SELECT DISTINCT x.workflow_id FROM executions x "
        "WHERE x.signalled_at IS NOT NULL AND x.status IN ('queued', 'running') "
        "AND x.signalled_at < now() - make_interval(secs => $1) "
        "AND (x.temporal_workflow_id IS NULL OR x.temporal_workflow_id NOT LIKE 'newsletter-%') "
        f"AND x.lane IS NULL AND {_AUTOMATION_UNLEASED} LIMIT $2",
        grace_s,
        limit,
    )
    return [r["workflow_id"] for r in rows]


async def lanes_to_check(conn: asyncpg.Connection, grace_s: float, limit: int, prefix: str) -> list[int]:
    """Lanes holding executions handed to them more than `grace_s` ago and still open; `prefix`
    and the lane number make the lane's Temporal workflow id, its lease key."""
    rows = await conn.fetch(
        "SELECT DISTINCT x.lane FROM executions x "
        "WHERE x.lane IS NOT NULL AND x.signalled_at IS NOT NULL AND x.status IN ('queued', 'running') "
        "AND x.signalled_at < now() - make_interval(secs => $1) "
        "AND (x.temporal_workflow_id IS NULL OR x.temporal_workflow_id NOT LIKE 'newsletter-%') "
        f"AND {_LANE_UNLEASED} LIMIT $2",
        grace_s,
        limit,
        prefix,
    )
    return [r["lane"] for r in rows]


async def newsletters_to_check(conn: asyncpg.Connection, grace_s: float, limit: int) -> list[asyncpg.Record]:
    """Running executions handed to a newsletter workflow more than `grace_s` ago."""
    rows: list[asyncpg.Record] = await conn.fetch(
        "SELECT x.id, x.attempts, x.temporal_workflow_id FROM executions x "
        "WHERE x.signalled_at IS NOT NULL AND x.status = 'running' "
        "AND x.temporal_workflow_id LIKE 'newsletter-%' "
        "AND coalesce(x.attempt_started_at, x.signalled_at) < now() - make_interval(secs => $1) "
        f"AND {_unleased('x.temporal_workflow_id')} ORDER BY x.seq LIMIT $2",
        grace_s,
        limit,
    )
    return rows


async def mailboxes_to_check(conn: asyncpg.Connection, grace_s: float, limit: int) -> list[asyncpg.Record]:
    """Active mailboxes, once signalled, whose last change is more than `grace_s` old."""
    rows: list[asyncpg.Record] = await conn.fetch(
        "SELECT m.owner_id, m.credential_id FROM gmail_mailboxes m "
        "WHERE m.status = 'active' "
        "AND m.updated_at < now() - make_interval(secs => $1) "
        f"AND {_MAILBOX_UNLEASED} ORDER BY m.credential_id LIMIT $2",
        grace_s,
        limit,
    )
    return rows


async def lease(conn: asyncpg.Connection, keys: Sequence[str], lease_s: float) -> list[str]:
    """Take the leases of these Temporal workflow ids that no other replica holds."""
    if not keys:
        return []
    async with conn.transaction():
        await conn.execute(
            "INSERT INTO reconcile_leases (temporal_workflow_id, lease_until) "
            "SELECT unnest($1::text[]), '-infinity' ON CONFLICT DO NOTHING",
            list(keys),
        )
        rows = await conn.fetch(
            "SELECT temporal_workflow_id FROM reconcile_leases "
            "WHERE temporal_workflow_id = ANY($1::text[]) AND lease_until <= now() FOR UPDATE SKIP LOCKED",
            list(keys),
        )
        taken = [r["temporal_workflow_id"] for r in rows]
        if taken:
            await conn.execute(
                "UPDATE reconcile_leases SET lease_until = now() + make_interval(secs => $2) "
                "WHERE temporal_workflow_id = ANY($1::text[])",
                taken,
                lease_s,
            )
    return taken


async def forget_old_leases(conn: asyncpg.Connection, older_than_s: float) -> None:
    """Drop leases that ended long ago (workflows finished, rows gone)."""
    await conn.execute(
        "DELETE FROM reconcile_leases WHERE lease_until < now() - make_interval(secs => $1)", older_than_s
    )


async def open_executions(conn: asyncpg.Connection, workflow_id: UUID, limit: int) -> list[asyncpg.Record]:
    """The automation's open executions that Temporal was given, with what decides if they are stranded."""
    rows: list[asyncpg.Record] = await conn.fetch(
        "SELECT x.id, x.workflow_id, x.status, x.attempts, x.signalled_at, x.next_attempt_at, "
        "x.attempt_started_at, now() AS now FROM executions x "
        "WHERE x.workflow_id = $1 AND x.signalled_at IS NOT NULL AND x.status IN ('queued', 'running') "
        "AND x.lane IS NULL "
        "AND (x.temporal_workflow_id IS NULL OR x.temporal_workflow_id NOT LIKE 'newsletter-%') "
        "ORDER BY x.seq LIMIT $2",
        workflow_id,
        limit,
    )
    return rows


async def open_lane_executions(conn: asyncpg.Connection, lane: int, limit: int) -> list[asyncpg.Record]:
    """The lane's open executions that Temporal was given, with what decides if they are stranded
    (`held`: queued behind a retry of its ordered workflow, see `LaneWork.ordered`)."""
    rows: list[asyncpg.Record] = await conn.fetch(
        "SELECT x.id, x.workflow_id, x.status, x.attempts, x.signalled_at, x.next_attempt_at, "
        "x.attempt_started_at, now() AS now, "
        # Queued behind a retry of an ordered (internal) workflow: waiting is what it should do.
        "(x.status = 'queued' AND EXISTS (SELECT 1 FROM workflows w WHERE w.id = x.workflow_id AND w.internal) "
        " AND EXISTS (SELECT 1 FROM executions o WHERE o.workflow_id = x.workflow_id AND o.status = 'running' "
        " AND o.next_attempt_at IS NOT NULL)) AS held FROM executions x "
        "WHERE x.lane = $1 AND x.signalled_at IS NOT NULL AND x.status IN ('queued', 'running') "
        "AND (x.temporal_workflow_id IS NULL OR x.temporal_workflow_id NOT LIKE 'newsletter-%') "
        "ORDER BY x.signalled_at LIMIT $2",
        lane,
        limit,
    )
    return rows


async def hand_back(conn: asyncpg.Connection, ids: Sequence[UUID], attempts: Sequence[int]) -> list[UUID]:
    """Make the hand-over signal these executions again, unless they moved on meanwhile."""
    rows = await conn.fetch(
        "UPDATE executions x SET signalled_at = NULL, lane = NULL "
        "FROM unnest($1::uuid[], $2::int[]) AS u(id, attempts) "
        "WHERE x.id = u.id AND x.attempts = u.attempts AND x.status IN ('queued', 'running') "
        "AND x.signalled_at IS NOT NULL RETURNING x.id",
        list(ids),
        list(attempts),
    )
    if rows:
        await conn.execute(f"SELECT pg_notify('{EVENTS_CHANNEL}', '')")
    return [r["id"] for r in rows]


async def newsletter_to_restart(conn: asyncpg.Connection, execution_id: UUID) -> asyncpg.Record | None:
    """A newsletter still sending (its execution running): when and how it sends."""
    row: asyncpg.Record | None = await conn.fetchrow(
        "SELECT n.send_at, n.config FROM newsletters n JOIN executions x ON x.id = n.execution_id "
        "WHERE n.execution_id = $1 AND x.status = 'running'",
        execution_id,
    )
    return row


async def mailbox_is_active(conn: asyncpg.Connection, credential_id: UUID) -> bool:
    """Whether the mailbox is still read by some workflow."""
    active: bool | None = await conn.fetchval(
        "SELECT status = 'active' FROM gmail_mailboxes WHERE credential_id = $1", credential_id
    )
    return bool(active)
