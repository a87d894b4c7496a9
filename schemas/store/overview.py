"""Read-only summaries for the owner console: workflow health and executions across workflows."""

from __future__ import annotations

from typing import Any
from uuid import UUID

import asyncpg

# The 24-hour rate looks at most at this many of a workflow's latest executions, so a page of
# busy workflows stays a bounded read.
STATS_WINDOW = 10_000


async def workflow_stats(conn: asyncpg.Connection, owner_id: UUID, workflow_ids: list[UUID]) -> dict[UUID, Any]:
    """Per workflow: its last execution's time and status, and the last 24 hours' finished and
    succeeded counts (among its latest STATS_WINDOW executions)."""
    rows = await conn.fetch(
        "SELECT w.id, last.created_at AS last_run_at, last.status AS last_status, "
        "  day.finished, day.succeeded "
        "FROM unnest($2::uuid[]) AS w(id) "
        "LEFT JOIN LATERAL (SELECT x.created_at, x.status FROM executions x "
        "  WHERE x.workflow_id = w.id AND x.owner_id = $1 ORDER BY x.seq DESC LIMIT 1) last ON true "
        "LEFT JOIN LATERAL (SELECT count(*) FILTER (WHERE x.status IN ('succeeded', 'failed')) AS finished, "
        "  count(*) FILTER (WHERE x.status = 'succeeded') AS succeeded FROM (SELECT status, created_at "
        "  FROM executions WHERE workflow_id = w.id AND owner_id = $1 ORDER BY seq DESC LIMIT $3) x "
        "  WHERE x.created_at > now() - interval '24 hours') day ON true",
        owner_id,
        workflow_ids,
        STATS_WINDOW,
    )
    return {r["id"]: r for r in rows}
