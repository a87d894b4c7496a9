"""Events: what arrived, and why it did or did not fire a workflow."""

from __future__ import annotations

from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response

from ingest.api.auth import require_owner
from ingest.api.common import json_response, page_query, page_response, path_id, query_choice, query_uuid
from ingest.api.executions import execution_json
from ingest.api.operations import ID, PAGING, UUID_SCHEMA, Param, Reply, operation, page_of
from ingest.state import app_state
from schemas import jsonlimits
from schemas.store import events as store
from schemas.store.events import Event
from schemas.store.executions import list_for_event
from schemas.store.outbox import SOURCE_TYPE as OUTBOX_SOURCE
from schemas.store.outbox import OutboxSource
from schemas.store.outbox import source_of as outbox_source

STATUSES = ("received", "dispatched", "unmatched", "rejected")


def event_json(row: Event) -> dict[str, Any]:
    """The list view of an event: everything but the body."""
    return {
        "id": row.id,
        "source_type": row.source_type,
        "source_id": row.source_id,
        "received_at": row.received_at,
        "status": row.status,
        "verification": row.verification,
        "dedup": {
            "key": row.dedup_key,
            "duplicate_count": row.duplicate_count,
            "last_duplicate_at": row.last_duplicate_at,
        },
        # Written by the dispatcher; null until it has looked at the event.
        "resolution": row.resolution,
        # Why the event was rejected, or what was unusual about its resolution; else null.
        "note": row.note,
        "dispatched_at": row.dispatched_at,
        "headers": row.headers,
        "body_size": row.body_size,
    }


def parsed_body(body: bytes, max_depth: int = jsonlimits.DEFAULT_MAX_DEPTH) -> Any:
    """JSON when the body parses as JSON within `max_depth` levels, else its text."""
    try:
        return jsonlimits.loads(body, max_depth)
    except orjson.JSONDecodeError:
        return body.decode("utf-8", "replace")


@operation(
    "GET",
    "/api/events",
    "List events (without bodies)",
    "events",
    {200: Reply("OK", page_of("Event"))},
    params=[
        Param("status", {"enum": list(STATUSES)}, "Only events in this status."),
        Param("endpoint_id", UUID_SCHEMA, "Only this endpoint's."),
        *PAGING,
    ],
)
async def list_events(request: Request) -> Response:
    """A page of the caller's events, newest first, by status and endpoint."""
    owner_id = await require_owner(request)
    status = query_choice(request, "status", STATUSES)
    endpoint_id = query_uuid(request, "endpoint_id")
    query = page_query(request)
    source_id = None if endpoint_id is None else str(endpoint_id)
    async with app_state(request).pool.acquire() as conn:
        rows = await store.list_events(
            conn, owner_id, limit=query.limit, after_seq=query.after_seq, status=status, source_id=source_id
        )
    return page_response(rows, query, event_json)


def outbox_row_json(source: OutboxSource) -> dict[str, Any]:
    """The owner's outbox row an event was made from, and where its claim stands."""
    return {
        "table": source.table_name,
        "row_id": source.row_id,
        "generation": source.generation,
        "claimed_from": source.claimed_from,
        "state": source.state,
        "outcome": source.outcome,
        "claimed_at": source.claimed_at,
        "written_back_at": source.written_back_at,
    }


@operation(
    "GET",
    "/api/events/{id}",
    "Get an event: verification, dedup, resolution and executions",
    "events",
    {200: Reply("OK", "EventDetail")},
    params=[ID],
)
async def get_event(request: Request) -> Response:
    """One event with its body and the executions it produced."""
    owner_id = await require_owner(request)
    event_id = path_id(request, "event")
    async with app_state(request).pool.acquire() as conn:
        row = await store.get_event(conn, owner_id, event_id)
        executions = await list_for_event(conn, owner_id, event_id)
        source = await outbox_source(conn, owner_id, event_id) if row.source_type == OUTBOX_SOURCE else None
    view = event_json(row) | {
        "body": parsed_body(row.body or b"", app_state(request).settings.max_json_depth),
        "executions": [execution_json(x) for x in executions],
        "outbox_row": None if source is None else outbox_row_json(source),
    }
    return json_response(view)
