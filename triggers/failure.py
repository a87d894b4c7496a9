"""`workflow.failure`: another workflow of the owner failed for good and names this one as `on_failure`.

Failure events are written by hookyard itself, in the transaction that records the failure
(`schemas/store/failure_events.py`), together with the execution of the error workflow: no
ingest route accepts this source and the dispatcher never resolves its events. A workflow with
this trigger runs only when a workflow naming it as `on_failure` fails (or when run by hand).
"""

from __future__ import annotations

from typing import Any

import orjson

from schemas import jsonlimits
from schemas.store.failure_events import SOURCE_TYPE
from triggers.base import WORKFLOW_ROUTE, InboxEvent, ManualRun, TriggerType, match_filter

NAME = SOURCE_TYPE

CONFIG_SCHEMA: dict[str, Any] = {"type": "object", "additionalProperties": False, "properties": {}}

_TIME = {"type": ["string", "null"], "format": "date-time"}
_ID = {"type": "string", "format": "uuid"}
_MAYBE_ID = {"type": ["string", "null"], "format": "uuid"}

DATA_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["event_id", "execution", "trigger"],
    "properties": {
        "event_id": {**_MAYBE_ID, "description": "The failure event (null on a manual run)."},
        "execution": {
            "type": "object",
            "description": "The execution that failed for good (no retry left).",
            "required": ["id", "workflow_id", "workflow_name", "status", "error", "attempts"],
            "properties": {
                "id": _MAYBE_ID,
                "workflow_id": _MAYBE_ID,
                "workflow_name": {"type": "string"},
                "status": {"const": "failed"},
                "error": {"type": ["string", "null"]},
                "attempts": {"type": "integer"},
                "event_id": {**_MAYBE_ID, "description": "The event it ran for (null for manual runs)."},
                "replay_of": _MAYBE_ID,
                "started_at": _TIME,
                "finished_at": _TIME,
            },
        },
        "trigger": {"description": "The failed execution's own trigger data, as its templates saw it."},
    },
}


def _trigger_data(event: InboxEvent) -> dict[str, Any]:
    # The body is what the failure's transaction wrote: the data the execution was queued with.
    try:
        body = jsonlimits.loads(event.body, event.max_json_depth)
    except orjson.JSONDecodeError:
        body = None  # deeper than this reader's limit: shown as text
    if not isinstance(body, dict):
        body = {"execution": {}, "trigger": event.body.decode("utf-8", "replace")}
    return {**body, "event_id": str(event.id)}


def _manual(run: ManualRun) -> dict[str, Any]:
    given = run.given
    execution = {
        "id": None,
        "workflow_id": None,
        "workflow_name": "manual run",
        "status": "failed",
        "error": "a manual run of the error workflow",
        "attempts": 0,
        "event_id": None,
        "replay_of": None,
        "started_at": run.now,
        "finished_at": run.now,
    }
    if isinstance(given.get("execution"), dict):
        execution |= given["execution"]
    return {"event_id": None, "execution": execution, "trigger": given.get("trigger", {})}


TRIGGER = TriggerType(
    name=NAME,
    source_type=SOURCE_TYPE,
    description="Another workflow of yours that names this one as `on_failure` failed for good; "
    "the trigger data is the failed execution and its trigger data.",
    config_schema=CONFIG_SCHEMA,
    # Failure events name the error workflow they are for.
    routing_key=lambda config: WORKFLOW_ROUTE,
    trigger_data=_trigger_data,
    match=match_filter,
    manual_data=_manual,
    manual_doc="The request body may give `execution` (fields over a sample failure) and `trigger`: trigger data "
    '{"event_id": null, "execution": {"id": null, "workflow_name": "manual run", "error", "attempts": 0, ...}, '
    '"trigger": <body.trigger or {}>}.',
    data_schema=DATA_SCHEMA,
)
