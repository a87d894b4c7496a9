"""`POST /api/workflows/{id}/run`: run a workflow now, with trigger data of the trigger's shape.

The request body is the part of a real event the owner would write (a webhook's body, a
schedule's payload, a message's fields); the trigger type builds trigger data of the shape its
real events have (`TriggerType.manual_data`), so a template that works on real events works on
a manual run. `?shape=raw` takes the body as the whole trigger data instead (what this route
did before); the response says which shape was used.

A test run: the trigger's filter is skipped and no event is stored; the execution is created
in one transaction with the workflow share-locked as active (so a concurrent deactivation
either wins or cancels it), and the dispatcher hands it to Temporal like any other.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from uuid import UUID

import asyncpg
from starlette.requests import Request
from starlette.responses import Response

from ingest.api.auth import require_owner
from ingest.api.common import json_response, path_id, read_json
from ingest.api.operations import ID, Body, Param, Reply, error, operation
from ingest.errors import Conflict
from ingest.state import app_state
from schemas.store.runs import insert_manual_run
from schemas.store.workflows import Workflow, get_workflow, lock_active
from triggers.base import ManualRun
from triggers.registry import TRIGGERS

RAW = "raw"
_RUN_QUEUED = {
    "type": "object",
    "required": ["execution_id", "status", "trigger_shape"],
    "properties": {
        "execution_id": {"type": "string", "format": "uuid"},
        "status": {"const": "queued"},
        "trigger_shape": {
            "type": "string",
            "description": "The trigger type whose data shape was built (see the catalog's `manual_run`), "
            "or `raw` when the body was taken as the whole trigger data.",
        },
    },
}
_SHAPE = Param(
    "shape",
    {"enum": ["trigger", RAW]},
    "`trigger` (default): build the trigger type's data around the body; `raw`: the body is the trigger data.",
)


@operation(
    "POST",
    "/api/workflows/{id}/run",
    "Run now with trigger data of the trigger's shape built from the body (the filter is skipped)",
    "workflows",
    {202: Reply("Queued.", _RUN_QUEUED)},
    params=[ID, _SHAPE],
    body=Body(
        {"type": "object"},
        required=False,
        description="What a real event would carry (see the catalog's `manual_run` per trigger type); "
        "an empty body runs with `{}`.",
    ),
    errors={409: error("The workflow is inactive; activate it to run it.")},
)
async def run_workflow(request: Request) -> Response:
    """Queue one execution now; 202 `{"execution_id", "trigger_shape"}`. An empty body runs with `{}`."""
    owner_id = await require_owner(request)
    workflow_id = path_id(request, "workflow")
    given = await read_json(request, optional=True)
    raw = request.query_params.get("shape") == RAW
    execution_id, shape = await run_now(app_state(request).pool, owner_id, workflow_id, given, raw=raw)
    return json_response({"execution_id": execution_id, "status": "queued", "trigger_shape": shape}, 202)


async def run_now(
    pool: asyncpg.Pool, owner_id: UUID, workflow_id: UUID, given: dict[str, Any], *, raw: bool = False
) -> tuple[UUID, str]:
    """Queue a manual run of one of the owner's workflows, its trigger data in the trigger's shape
    unless `raw`; the execution id and the shape used (`NotFound`, `Conflict`)."""
    async with pool.acquire() as conn, conn.transaction():
        workflow = await get_workflow(conn, owner_id, workflow_id)
        if not await lock_active(conn, [workflow_id]):
            if workflow.paused_reason is not None:
                raise Conflict(f"the workflow is paused ({workflow.paused_reason}); reconnect its credential")
            raise Conflict("the workflow is inactive; activate it to run it")
        shape, trigger_data = _trigger_data(workflow, given, raw)
        execution_id: UUID = await insert_manual_run(conn, owner_id, workflow_id, trigger_data)
    return execution_id, shape


def _trigger_data(workflow: Workflow, given: dict[str, Any], raw: bool) -> tuple[str, dict[str, Any]]:
    trigger = TRIGGERS.get(workflow.trigger_type)
    if raw or trigger is None or trigger.manual_data is None:
        return RAW, given
    run = ManualRun(
        workflow_id=str(workflow.id),
        source_id=str(workflow.routing_key),
        config=workflow.trigger_config,
        given=given,
        now=datetime.now(UTC).isoformat(),
    )
    return trigger.name, trigger.manual_data(run)
