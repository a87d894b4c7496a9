"""`postgres.outbox`: rows of an owner's own PostgreSQL table (an outbox) become events.

The dispatcher polls each active workflow of this type (worker/dispatch/outbox.py): it claims
due rows in the owner's database (status PENDING -> PROCESSING, `FOR UPDATE SKIP LOCKED`),
stores one event per row in hookyard's inbox, and when the row's execution ends writes SENT
or FAILED and the action's result back into the row. Events have source type `outbox` and
the workflow's id as source id; only the dispatcher writes them (no ingest path accepts the
source), and they are resolved and run on the lanes like any other event. This module only
describes the config and turns an event into trigger data; the statements are compiled in
schemas/outbox_sql.py.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from uuid import UUID

import asyncpg
import orjson

from schemas import jsonlimits
from schemas.outbox_sql import (
    CONDITION_OPS,
    DEFAULT_STATUSES,
    IDENTIFIER,
    MAX_BATCH,
    OutboxSqlError,
    compile_outbox,
)
from schemas.store.credentials import credential_provider
from triggers.base import WORKFLOW_ROUTE, InboxEvent, ManualRun, TriggerConfigError, TriggerType
from triggers.filters import FilterOutcome

NAME = "postgres.outbox"
SOURCE_TYPE = "outbox"
CREDENTIAL_PROVIDER = "postgres"

_IDENT: dict[str, Any] = {"type": "string", "pattern": f"^{IDENTIFIER}$", "maxLength": 63}
_STATUS: dict[str, Any] = {"type": "string", "minLength": 1, "maxLength": 100}
_SCALAR: dict[str, Any] = {"type": ["string", "number", "boolean"]}

CONFIG_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["credential_id", "table"],
    "additionalProperties": False,
    "properties": {
        "credential_id": {
            "type": "string",
            "format": "uuid",
            "description": "Id of the owner's `postgres` credential: the database holding the table.",
        },
        "table": {
            "type": "string",
            "pattern": f"^{IDENTIFIER}(\\.{IDENTIFIER})?$",
            "maxLength": 127,
            "description": "The outbox table, `table` or `schema.table` (identifiers, case as written).",
        },
        "id_column": {**_IDENT, "default": "id", "description": "The row's unique id column."},
        "status_column": {**_IDENT, "default": "status", "description": "The column holding the row's status."},
        "statuses": {
            "type": "object",
            "additionalProperties": False,
            "properties": {key: {**_STATUS, "default": value} for key, value in DEFAULT_STATUSES.items()},
            "description": "The status values: pending rows are claimed, processing while hookyard "
            "holds them, then sent or failed.",
        },
        "conditions": {
            "type": "array",
            "maxItems": 20,
            "description": "Further conditions a row must meet, all of them (e.g. publish_status equals "
            "PUBLISH): values are bound as parameters, never SQL.",
            "items": {
                "type": "object",
                "additionalProperties": False,
                "required": ["column", "op"],
                "properties": {
                    "column": _IDENT,
                    "op": {"enum": list(CONDITION_OPS)},
                    "value": {"anyOf": [_SCALAR, {"type": "array", "items": _SCALAR, "minItems": 1, "maxItems": 100}]},
                },
            },
        },
        "due_column": {**_IDENT, "description": "A timestamp column: a row runs only once it is due (NULL: now)."},
        "updated_column": {
            **_IDENT,
            "description": "A timestamp column hookyard sets on every status change; with it, rows left "
            "PROCESSING longer than lease_timeout_s (by anyone) are claimed again, and failed rows "
            "wait retry.interval_s.",
        },
        "columns": {
            "type": "array",
            "items": _IDENT,
            "minItems": 1,
            "maxItems": 100,
            "uniqueItems": True,
            "description": "Columns passed as trigger data (`trigger.row`); default all.",
        },
        "result_column": {
            **_IDENT,
            "description": "A JSON (or text) column receiving the action's result or error (e.g. error_details).",
        },
        "batch_size": {"type": "integer", "minimum": 1, "maximum": MAX_BATCH, "default": 100},
        "poll_interval_s": {"type": "number", "minimum": 1, "maximum": 3600, "default": 10},
        "listen_channel": {
            **_IDENT,
            "description": "A LISTEN channel the application NOTIFYs on insert: polls at once.",
        },
        "lease_timeout_s": {"type": "number", "minimum": 10, "maximum": 86400, "default": 300},
        "retry": {
            "type": "object",
            "additionalProperties": False,
            "description": "Retry of FAILED rows.",
            "properties": {
                "enabled": {"type": "boolean", "default": True},
                "interval_s": {"type": "number", "minimum": 1, "maximum": 86400, "default": 60},
                "max_attempts": {"type": "integer", "minimum": 1, "maximum": 100, "default": 3},
                "attempts_column": {
                    **_IDENT,
                    "description": "An integer column counting claims; without it hookyard counts failures itself.",
                },
            },
        },
    },
}


def body_of(
    *, table: str, row_id: str, generation: int, claimed_from: str, attempt: int, row: Mapping[str, Any]
) -> dict[str, Any]:
    """The event body of one claimed row (also the trigger data)."""
    return {
        "table": table,
        "row_id": row_id,
        "generation": generation,
        "claimed_from": claimed_from,
        "attempt": attempt,
        "row": dict(row),
    }


def _trigger_data(event: InboxEvent) -> dict[str, Any]:
    try:
        data = jsonlimits.loads(event.body, event.max_json_depth)
    except orjson.JSONDecodeError:
        data = None  # written by the dispatcher, never from outside; kept total all the same
    if not isinstance(data, dict):
        data = {"row": {}, "note": "row too deep to pass as data"}
    return {"event_id": str(event.id), "workflow_id": event.source_id, "received_at": event.received_at, **data}


_CLAIMED = FilterOutcome(matched=True, reason="claimed from the outbox table")


def _match(config: Mapping[str, Any], data: Mapping[str, Any]) -> FilterOutcome:
    # Row conditions are applied in the owner's database; every claimed row runs.
    return _CLAIMED


async def _check(conn: asyncpg.Connection, owner_id: UUID, config: Mapping[str, Any]) -> None:
    try:
        compile_outbox(config)
    except OutboxSqlError as exc:
        raise TriggerConfigError(f"trigger.config.{exc.field}", str(exc).partition(": ")[2]) from None
    provider = await credential_provider(conn, owner_id, UUID(str(config["credential_id"])))
    if provider is None:
        raise TriggerConfigError("trigger.config.credential_id", "no such credential")
    if provider != CREDENTIAL_PROVIDER:
        raise TriggerConfigError("trigger.config.credential_id", f"credential is for {provider}; this needs postgres")


def _manual(run: ManualRun) -> dict[str, Any]:
    return {
        "event_id": None,
        "workflow_id": run.workflow_id,
        "received_at": run.now,
        "table": run.config.get("table"),
        "row_id": None,
        "generation": 0,
        "claimed_from": None,
        "attempt": 0,
        "row": run.given,
    }


TRIGGER = TriggerType(
    name=NAME,
    source_type=SOURCE_TYPE,
    description="Rows of a table in the owner's PostgreSQL (an outbox) are claimed, run, and their "
    "status (SENT/FAILED) and result written back.",
    config_schema=CONFIG_SCHEMA,
    routing_key=lambda config: WORKFLOW_ROUTE,
    trigger_data=_trigger_data,
    match=_match,
    check_config=_check,
    manual_data=_manual,
    manual_doc="The request body stands for the row: trigger data "
    '{"event_id": null, "workflow_id", "table", "row_id": null, "generation": 0, "row": <request body>}; '
    "nothing is written back.",
)
