"""`POST /api/workflows/{id}/run`: run a workflow now, with the request body as trigger data.

A test run: the trigger's filter is skipped and no event is stored; the execution is created
in one transaction with the workflow share-locked as active (so a concurrent deactivation
either wins or cancels it), and the dispatcher hands it to Temporal like any other.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from ingest.api.auth import require_owner
from ingest.api.common import json_response, path_id, read_json
from ingest.api.operations import ID, Body, Reply, error, operation
from ingest.errors import Conflict
from ingest.state import app_state
from schemas.store.runs import insert_manual_run
from schemas.store.workflows import get_workflow, lock_active

_RUN_QUEUED = {
    "type": "object",
    "required": ["execution_id", "status"],
    "properties": {"execution_id": {"type": "string", "format": "uuid"}, "status": {"const": "queued"}},
}


@operation(
    "POST",
    "/api/workflows/{id}/run",
    "Run now with the body as trigger data (the filter is skipped)",
    "workflows",
    {202: Reply("Queued.", _RUN_QUEUED)},
    params=[ID],
    body=Body({"type": "object"}, required=False, description="Trigger data; an empty body runs with `{}`."),
    errors={409: error("The workflow is inactive; activate it to run it.")},
)
async def run_workflow(request: Request) -> Response:
    """Queue one execution now; 202 `{"execution_id"}`. An empty body runs with `{}`."""
    owner_id = await require_owner(request)
    workflow_id = path_id(request, "workflow")
    trigger_data = await read_json(request, optional=True)
    async with app_state(request).pool.acquire() as conn, conn.transaction():
        await get_workflow(conn, owner_id, workflow_id)
        if not await lock_active(conn, [workflow_id]):
            raise Conflict("the workflow is inactive; activate it to run it")
        execution_id = await insert_manual_run(conn, owner_id, workflow_id, trigger_data)
    return json_response({"execution_id": execution_id, "status": "queued"}, 202)
