"""What happens in the transaction in which an execution ends (succeeded, failed, cancelled).

Every statement that makes an execution terminal returns `RETURNING` of the rows it ended and
calls `after_terminal` with them before its transaction commits, so whatever reacts to an
execution ending is as durable as the ending itself. Each reaction is one call below.
"""

from __future__ import annotations

from collections.abc import Sequence

import asyncpg

from schemas.store.failure_events import start_error_workflows
from schemas.store.notifications import notify_executions_ended
from schemas.store.outbox import wake_write_back

# The columns every terminal transition returns (qualify with the table alias where needed).
RETURNING = "id, owner_id, workflow_id, event_id, replay_of, status, error, attempts, finished_at"


def returning(alias: str) -> str:
    """`RETURNING` with each column qualified by `alias` (for UPDATE … FROM statements)."""
    return ", ".join(f"{alias}.{c.strip()}" for c in RETURNING.split(","))


async def after_terminal(conn: asyncpg.Connection, rows: Sequence[asyncpg.Record]) -> None:
    """React to executions that just ended; call inside the transaction that ended them.

    `rows` carry the `RETURNING` columns (id, owner_id, workflow_id, event_id, replay_of,
    status, error, attempts, finished_at).
    """
    if not rows:
        return
    await notify_executions_ended(conn, rows)
    await wake_write_back(conn, rows)
    await start_error_workflows(conn, rows)
