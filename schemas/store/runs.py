"""Manual runs: executions an owner starts by hand, with trigger data of their choosing."""

from __future__ import annotations

from typing import Any
from uuid import UUID

import asyncpg

from schemas.store.events import EVENTS_CHANNEL


async def insert_manual_run(
    conn: asyncpg.Connection, owner_id: UUID, workflow_id: UUID, trigger_data: dict[str, Any]
) -> UUID:
    """A queued execution with no event behind it; the dispatcher hands it over as usual.

    Call inside the transaction that share-locked the workflow as active (`lock_active`).
    """
    execution_id: UUID = await conn.fetchval(
        "INSERT INTO executions (owner_id, workflow_id, trigger_data) VALUES ($1, $2, $3) RETURNING id",
        owner_id,
        workflow_id,
        trigger_data,
    )
    # Wakes the dispatcher, whose hand-over step picks up every queued execution.
    await conn.execute("SELECT pg_notify($1, '')", EVENTS_CHANNEL)
    return execution_id
