"""Workflows: an owner's trigger + action definitions."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

import asyncpg

from schemas.errors import NotFound
from schemas.store.gmail import HEALTH_JSON
from schemas.store.outbox import HEALTH_JSON as OUTBOX_HEALTH_JSON
from schemas.store.rows import row_of, rows_of
from schemas.store.terminal import RETURNING, after_terminal


@dataclass(frozen=True, slots=True)
class WorkflowSpec:
    """The part of a workflow the dispatcher needs to route and hand over an event."""

    id: UUID
    owner_id: UUID
    trigger_type: str
    trigger_config: dict[str, Any]
    concurrency_limit: int
    retry_policy: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Workflow:
    """A stored workflow definition and its state (never its signing secret, only whether it has one)."""

    id: UUID
    seq: int
    owner_id: UUID
    name: str
    trigger_type: str
    trigger_config: dict[str, Any]
    routing_key: str
    action_type: str
    action_config: dict[str, Any]
    credential_id: UUID | None
    # The owner's choice; `paused_reason` is set while hookyard holds it paused (migration 0010).
    active: bool
    paused_reason: str | None
    concurrency_limit: int
    retry_policy: dict[str, Any]
    created_at: datetime
    updated_at: datetime
    signing: bool
    sync_pending: bool
    sync_error: str | None
    # The watch of the mailbox a gmail.* trigger reads (`gmail.HEALTH_JSON`), else None.
    mailbox: dict[str, Any] | None
    # Poll health of a postgres.outbox trigger (`outbox.HEALTH_JSON`), else None.
    outbox: dict[str, Any] | None
    # The owner's workflow run when an execution of this one fails for good (migration 0015).
    on_failure: UUID | None


_COLUMNS = (
    "id, seq, owner_id, name, trigger_type, trigger_config, routing_key, action_type, action_config, "
    # `active` is the owner's choice; a workflow hookyard paused (`paused_reason`) is stored
    # inactive but was active by choice (migration 0010).
    "credential_id, (active OR paused_reason IS NOT NULL) AS active, paused_reason, "
    "concurrency_limit, retry_policy, created_at, updated_at, "
    "(signing_secret IS NOT NULL) AS signing, (sync_version > synced_version) AS sync_pending, sync_error, "
    # The watch of the mailbox a gmail.* trigger reads (NULL for other triggers).
    f"(SELECT {HEALTH_JSON} FROM gmail_mailboxes m WHERE m.owner_id = workflows.owner_id AND m.credential_id = "
    "CASE WHEN workflows.trigger_type LIKE 'gmail.%' THEN workflows.routing_key::uuid END) AS mailbox, "
    f"(SELECT {OUTBOX_HEALTH_JSON} FROM outbox_health h WHERE h.workflow_id = workflows.id "
    "AND workflows.trigger_type = 'postgres.outbox') AS outbox, "
    # A reference to a deleted workflow reads as none. Soft deletion leaves references stored
    # (clearing them would lock the rows naming it after its own, and deadlock with a PATCH of
    # one of them); the next save of the naming workflow stores the none it read.
    "(SELECT t.id FROM workflows t WHERE t.id = workflows.on_failure AND t.deleted_at IS NULL) AS on_failure"
)


# Lanes a workflow is spread over when no count is given (the default of HOOKYARD_LANES; the
# migration that added lanes uses it too).
DEFAULT_LANES = 16


async def insert_workflow(
    conn: asyncpg.Connection, owner_id: UUID, values: dict[str, Any], lanes: int = DEFAULT_LANES
) -> Workflow:
    """Insert a validated workflow definition.

    `values` may carry the row's `id` (callers that bind ciphertext to the row pick it first)
    and an already encrypted `signing_secret`. The workflow's execution lane is a hash of its id
    modulo `lanes` (the default count when lanes are off), fixed for good.
    """
    row = await conn.fetchrow(
        "INSERT INTO workflows (owner_id, name, trigger_type, trigger_config, routing_key, action_type, "
        "action_config, credential_id, active, concurrency_limit, retry_policy, id, signing_secret, lane, on_failure) "
        "SELECT $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, i.id, $13, "
        "mod(abs(hashtext(i.id::text)::bigint), $14), $15 "
        "FROM (SELECT coalesce($12::uuid, gen_random_uuid()) AS id) i "
        f"RETURNING {_COLUMNS}",
        owner_id,
        values["name"],
        values["trigger_type"],
        values["trigger_config"],
        values["routing_key"],
        values["action_type"],
        values["action_config"],
        values["credential_id"],
        values["active"],
        values["concurrency_limit"],
        values["retry_policy"],
        values.get("id"),
        values.get("signing_secret"),
        lanes if lanes > 0 else DEFAULT_LANES,
        values.get("on_failure"),
    )
    return row_of(Workflow, row)


async def update_workflow(
    conn: asyncpg.Connection, owner_id: UUID, workflow_id: UUID, values: dict[str, Any]
) -> Workflow:
    """Replace the definition (the caller merged and validated the patch); `NotFound` if not live.

    An encrypted `signing_secret` in `values` is stored; without one the current one is kept.
    """
    row = await conn.fetchrow(
        "UPDATE workflows SET name = $3, trigger_type = $4, trigger_config = $5, routing_key = $6, "
        "action_type = $7, action_config = $8, credential_id = $9, concurrency_limit = $10, "
        "retry_policy = $11, signing_secret = coalesce($12, signing_secret), on_failure = $13, updated_at = now() "
        f"WHERE id = $1 AND owner_id = $2 AND NOT internal AND deleted_at IS NULL RETURNING {_COLUMNS}",
        workflow_id,
        owner_id,
        values["name"],
        values["trigger_type"],
        values["trigger_config"],
        values["routing_key"],
        values["action_type"],
        values["action_config"],
        values["credential_id"],
        values["concurrency_limit"],
        values["retry_policy"],
        values.get("signing_secret"),
        values.get("on_failure"),
    )
    if row is None:
        raise NotFound("workflow")
    return row_of(Workflow, row)


async def get_workflow(
    conn: asyncpg.Connection,
    owner_id: UUID,
    workflow_id: UUID,
    *,
    for_update: bool = False,
    include_deleted: bool = False,
) -> Workflow:
    """One of the owner's live workflows (or deleted ones too, whose executions stay listable).

    `NotFound` if the owner has no such workflow.
    """
    lock = " FOR UPDATE" if for_update else ""
    row = await conn.fetchrow(
        f"SELECT {_COLUMNS} FROM workflows WHERE id = $1 AND owner_id = $2 AND NOT internal "
        f"AND ($3 OR deleted_at IS NULL){lock}",
        workflow_id,
        owner_id,
        include_deleted,
    )
    if row is None:
        raise NotFound("workflow")
    return row_of(Workflow, row)


async def list_workflows(
    conn: asyncpg.Connection, owner_id: UUID, *, limit: int, after_seq: int | None = None
) -> list[Workflow]:
    """A page of the owner's workflows, newest first (limit+1 rows)."""
    rows = await conn.fetch(
        f"SELECT {_COLUMNS} FROM workflows WHERE owner_id = $1 AND NOT internal AND deleted_at IS NULL "
        "AND ($2::bigint IS NULL OR seq < $2) ORDER BY seq DESC LIMIT $3",
        owner_id,
        after_seq,
        limit + 1,
    )
    return rows_of(Workflow, rows)


async def set_active(conn: asyncpg.Connection, owner_id: UUID, workflow_id: UUID, active: bool) -> tuple[Workflow, int]:
    """Activate or deactivate; deactivating cancels every execution not yet started.

    Activating a workflow hookyard paused keeps it paused until its cause is cured (the owner's
    choice is already "active"); deactivating it makes it the owner's choice, so curing the
    cause does not resume it. Returns the row and the number of executions cancelled;
    `NotFound` if not live.
    """
    async with conn.transaction():
        row = await conn.fetchrow(
            f"UPDATE workflows SET active = $3 AND paused_reason IS NULL, "
            f"paused_reason = CASE WHEN $3 THEN paused_reason END, updated_at = now() "
            f"WHERE id = $1 AND owner_id = $2 AND NOT internal AND deleted_at IS NULL RETURNING {_COLUMNS}",
            workflow_id,
            owner_id,
            active,
        )
        if row is None:
            raise NotFound("workflow")
        cancelled = 0 if active else await cancel_pending(conn, workflow_id)
    return row_of(Workflow, row), cancelled


async def delete_workflow(conn: asyncpg.Connection, owner_id: UUID, workflow_id: UUID) -> None:
    """Soft-delete (its executions stay listable) and cancel what has not started; `NotFound` if not live."""
    async with conn.transaction():
        status: str = await conn.execute(
            "UPDATE workflows SET active = false, paused_reason = NULL, deleted_at = now() "
            "WHERE id = $1 AND owner_id = $2 AND NOT internal AND deleted_at IS NULL",
            workflow_id,
            owner_id,
        )
        if not status.endswith(" 1"):
            raise NotFound("workflow")
        await cancel_pending(conn, workflow_id)


async def cancel_pending(conn: asyncpg.Connection, workflow_id: UUID) -> int:
    """Mark queued executions cancelled so a running automation skips them; call inside a
    transaction (`after_terminal` runs in it)."""
    rows = await conn.fetch(
        "UPDATE executions SET status = 'cancelled', finished_at = now(), "
        "error = 'workflow was deactivated before this execution started' "
        # Executions waiting for a retry have not started their next attempt either.
        "WHERE workflow_id = $1 AND (status = 'queued' OR (status = 'running' AND next_attempt_at IS NOT NULL)) "
        f"RETURNING {RETURNING}",
        workflow_id,
    )
    await after_terminal(conn, rows)
    return len(rows)


async def live_trigger_type(conn: asyncpg.Connection, owner_id: UUID, workflow_id: UUID) -> str | None:
    """The trigger type of one of the owner's live workflows; None if there is no such workflow,
    whether or not another owner has one with that id."""
    # Not locked: a PATCH naming it would lock its own row, then this one, and could deadlock
    # with a concurrent save of this one. A reference to a workflow deleted since reads as none.
    trigger_type: str | None = await conn.fetchval(
        "SELECT trigger_type FROM workflows WHERE id = $1 AND owner_id = $2 AND NOT internal AND deleted_at IS NULL",
        workflow_id,
        owner_id,
    )
    return trigger_type


async def routing_version(conn: asyncpg.Connection) -> int:
    """Counter bumped by a trigger on every workflow change (cache invalidation across processes)."""
    version: int = await conn.fetchval("SELECT version FROM cache_versions WHERE name = 'workflows'")
    return version


async def active_for_route(conn: asyncpg.Connection, trigger_type: str, routing_key: str) -> list[WorkflowSpec]:
    """Active workflows listening on one routing key (an index lookup)."""
    rows = await conn.fetch(
        "SELECT id, owner_id, trigger_type, trigger_config, concurrency_limit, retry_policy "
        "FROM workflows WHERE trigger_type = $1 AND routing_key = $2 AND active AND deleted_at IS NULL "
        "ORDER BY seq",
        trigger_type,
        routing_key,
    )
    return [WorkflowSpec(**dict(r)) for r in rows]


async def lock_active(conn: asyncpg.Connection, workflow_ids: list[UUID]) -> set[UUID]:
    """Of these workflows, the ones still active, share-locked until the transaction ends.

    A concurrent deactivation either commits first (and the workflow is left out) or waits for
    our transaction, whose queued executions it then cancels. Nothing fires after a deactivate.
    """
    rows = await conn.fetch(
        "SELECT id FROM workflows WHERE id = ANY($1::uuid[]) AND active AND deleted_at IS NULL ORDER BY id FOR SHARE",
        workflow_ids,
    )
    return {r["id"] for r in rows}
