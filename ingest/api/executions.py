"""Executions: what each workflow run did, replaying one, and cancelling one."""

from __future__ import annotations

from typing import Any
from uuid import UUID

import asyncpg
from starlette.requests import Request
from starlette.responses import Response

from actions.base import OwnWorkflow
from actions.registry import ACTIONS
from ingest.api.auth import require_owner
from ingest.api.common import json_response, page_query, page_response, path_id, query_choice
from ingest.api.operations import ID, PAGING, Param, Reply, error, operation, page_of
from ingest.errors import Conflict, NotFound
from ingest.state import app_state
from schemas.store import executions as store
from schemas.store import newsletter as newsletter_store
from schemas.store.executions import Execution
from schemas.store.workflows import get_workflow, lock_active

STATUSES = ("queued", "running", "succeeded", "failed", "cancelled")
CANCELLED_BY_OWNER = "cancelled by the owner"
_TAG = "executions"


def execution_json(row: Execution, progress: dict[str, Any] | None = None) -> dict[str, Any]:
    """The API view of an execution row; a newsletter's also shows its `progress`."""
    body = {
        "id": row.id,
        "workflow_id": row.workflow_id,
        "event_id": row.event_id,
        "replay_of": row.replay_of,
        "status": row.status,
        "trigger_data": row.trigger_data,
        "result": row.result,
        "error": row.error,
        "attempts": row.attempts,
        "created_at": row.created_at,
        "started_at": row.started_at,
        "finished_at": row.finished_at,
        "next_attempt_at": row.next_attempt_at,
        "temporal": {"workflow_id": row.temporal_workflow_id, "run_id": row.temporal_run_id},
    }
    if progress is not None:
        body["progress"] = progress
    return body


def _own_workflow(action_type: str) -> OwnWorkflow | None:
    action = ACTIONS.get(action_type)
    return None if action is None else action.own_workflow


@operation(
    "GET",
    "/api/workflows/{id}/executions",
    "List a workflow's executions",
    _TAG,
    {200: Reply("OK", page_of("Execution"))},
    params=[ID, Param("status", {"enum": list(STATUSES)}, "Only executions in this status."), *PAGING],
)
async def list_for_workflow(request: Request) -> Response:
    """A page of one workflow's executions, newest first, optionally by status."""
    owner_id = await require_owner(request)
    workflow_id = path_id(request, "workflow")
    status = query_choice(request, "status", STATUSES)
    query = page_query(request)
    async with app_state(request).pool.acquire() as conn:
        # A deleted workflow's history stays readable.
        await get_workflow(conn, owner_id, workflow_id, include_deleted=True)
        rows = await store.list_for_workflow(
            conn, owner_id, workflow_id, limit=query.limit, after_seq=query.after_seq, status=status
        )
    return page_response(rows, query, execution_json)


@operation("GET", "/api/executions/{id}", "Get an execution", _TAG, {200: Reply("OK", "Execution")}, params=[ID])
async def get_execution(request: Request) -> Response:
    """One execution."""
    owner_id = await require_owner(request)
    execution_id = path_id(request, "execution")
    async with app_state(request).pool.acquire() as conn:
        row = await store.get_execution(conn, owner_id, execution_id)
        progress = await newsletter_store.progress(conn, execution_id)
    return json_response(execution_json(row, progress))


@operation(
    "POST",
    "/api/executions/{id}/replay",
    "Replay an execution",
    _TAG,
    {202: Reply("Queued.", "Execution")},
    params=[ID],
    errors={409: error("The workflow is inactive or deleted; activate it to replay its executions.")},
)
async def replay_execution(request: Request) -> Response:
    """Queue a new run with the same event and trigger data; the original is left as it was."""
    owner_id = await require_owner(request)
    execution_id = path_id(request, "execution")
    return json_response(execution_json(await replay(app_state(request).pool, owner_id, execution_id)), 202)


async def replay(pool: asyncpg.Pool, owner_id: UUID, execution_id: UUID) -> Any:
    """Insert the replay of one of the owner's executions; its row (`NotFound`, `Conflict`)."""
    async with pool.acquire() as conn, conn.transaction():
        original = await store.get_execution(conn, owner_id, execution_id)
        # Share-locks the workflow row, so a concurrent deactivation cannot slip in between.
        active = await lock_active(conn, [original.workflow_id])
        if not active:
            raise Conflict("the workflow is inactive or deleted; activate it to replay its executions")
        new_id = await store.insert_replay(conn, owner_id, execution_id)
        if new_id is None:
            raise NotFound("no such execution, or its workflow was deleted")
        return await store.get_execution(conn, owner_id, new_id)


@operation(
    "POST",
    "/api/executions/{id}/cancel",
    "Cancel an execution (a newsletter stops between batches)",
    _TAG,
    {202: Reply("Cancelled, or asked to stop.", "Execution")},
    params=[ID],
    errors={409: error("It has finished, or an attempt of a non-newsletter action is in flight.")},
)
async def cancel_execution(request: Request) -> Response:
    """Stop an execution: 202 with the execution as it now stands, 409 if it cannot be stopped.

    Queued executions, and running ones waiting for a retry, are cancelled at once. A newsletter
    stops between batches (its workflow reads the request from the database), or at once if it
    has not started sending. An attempt of another action already in flight cannot be recalled.
    """
    owner_id = await require_owner(request)
    execution_id = path_id(request, "execution")
    updated, progress = await cancel(app_state(request).pool, owner_id, execution_id)
    return json_response(execution_json(updated, progress), 202)


async def cancel(pool: asyncpg.Pool, owner_id: UUID, execution_id: UUID) -> tuple[Any, dict[str, Any] | None]:
    """Cancel (or ask to stop) one of the owner's executions: its row and newsletter progress."""
    async with pool.acquire() as conn, conn.transaction():
        row = await store.lock_for_cancel(conn, owner_id, execution_id)
        if row is None:
            raise NotFound("no such execution")
        if row["status"] in store.TERMINAL:
            raise Conflict(f"the execution has already finished ({row['status']})")
        if row["status"] == "queued":
            await store.mark_cancelled(conn, execution_id, CANCELLED_BY_OWNER)
        elif (own_workflow := _own_workflow(row["action_type"])) is not None:
            # Its workflow stops at its next checkpoint (a newsletter: between batches).
            await own_workflow.cancel(conn, execution_id, CANCELLED_BY_OWNER)
        elif row["next_attempt_at"] is not None:
            await store.mark_cancelled(conn, execution_id, CANCELLED_BY_OWNER)
        else:
            raise Conflict("an attempt of this execution is in flight and cannot be recalled; it finishes on its own")
        updated = await store.get_execution(conn, owner_id, execution_id)
        progress = await newsletter_store.progress(conn, execution_id)
    return updated, progress
