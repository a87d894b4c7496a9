"""`schedule.tick`: an outside scheduler (Cloud Scheduler, a Kubernetes CronJob) fires the workflow.

The scheduler POSTs to `/ingest/ticks/{workflow id}`, authenticated one of two ways:

- `{"auth": "hmac", "endpoint_id": ...}`: signed with the secret of one of the owner's webhook
  endpoints, in that endpoint's scheme (Standard Webhooks: `hookyard sign` prints the headers).
  Reusing an endpoint reuses its encrypted storage and its rotation with a grace period; use
  an endpoint of its own for the scheduler, since a signature does not name the URL it was
  sent to.
- `{"auth": "oidc", "audience": ..., "service_account": ...}`: a Google-signed OIDC token of
  that service account for that audience (Cloud Scheduler's "Add OIDC token").

Each request is deduplicated on the scheduled time it names, when it names one: header
`X-Scheduled-Time` or `X-CloudScheduler-ScheduleTime` (RFC 3339, or Unix seconds), or a
`scheduled_time` field of a JSON object body; else on the sender's delivery id; else not at
all, since a scheduler's ticks usually carry identical bodies and a body hash would swallow
every tick after the first.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

import asyncpg
import orjson

from schemas import jsonlimits
from triggers.base import (
    WORKFLOW_ROUTE,
    InboxEvent,
    ManualRun,
    TriggerConfigError,
    TriggerType,
    check_endpoint,
    check_filter,
    match_filter,
)
from triggers.filters import filter_schema
from triggers.webhook import parse_body

NAME = "schedule.tick"
SOURCE_TYPE = "tick"
SCHEDULED_TIME_HEADERS = ("x-scheduled-time", "x-cloudscheduler-scheduletime")
SCHEDULED_TIME_FIELD = "scheduled_time"

CONFIG_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["auth"],
    "additionalProperties": False,
    "properties": {
        "auth": {
            "enum": ["hmac", "oidc"],
            "description": "`hmac`: signed with a webhook endpoint's secret; `oidc`: a Google-signed token.",
        },
        "endpoint_id": {
            "type": "string",
            "format": "uuid",
            "description": "With `hmac`: the endpoint whose secrets and scheme verify the ticks.",
        },
        "audience": {
            "type": "string",
            "minLength": 1,
            "maxLength": 500,
            "description": "With `oidc`: the token's required audience (usually the tick URL).",
        },
        "service_account": {
            "type": "string",
            "format": "email",
            "maxLength": 320,
            "description": "With `oidc`: the service account the token must name (`email` claim).",
        },
        "filter": {
            **filter_schema(),
            "description": "Optional condition over `body`, `headers` (lower-case) and `scheduled_at`.",
        },
    },
    "allOf": [
        {
            "if": {"properties": {"auth": {"const": "hmac"}}, "required": ["auth"]},
            "then": {"required": ["endpoint_id"]},
        },
        {
            "if": {"properties": {"auth": {"const": "oidc"}}, "required": ["auth"]},
            "then": {"required": ["audience", "service_account"]},
        },
    ],
}

_AUTH_FIELDS = {"hmac": ("endpoint_id",), "oidc": ("audience", "service_account")}


class BadScheduledTime(ValueError):
    """A scheduled time was given but cannot be read."""


def _parse_time(value: object, where: str) -> str:
    if isinstance(value, int | float) and not isinstance(value, bool):
        text = str(int(value)) if float(value).is_integer() else ""
    elif isinstance(value, str):
        text = value.strip()
    else:
        raise BadScheduledTime(f"{where} must be an RFC 3339 timestamp or Unix seconds")
    try:
        if text.isascii() and text.isdigit() and len(text) <= 12:
            moment = datetime.fromtimestamp(int(text), UTC)
        else:
            moment = datetime.fromisoformat(text)
        if moment.tzinfo is None:
            raise BadScheduledTime(f"{where} needs a UTC offset (e.g. 2026-01-31T09:00:00Z)")
        return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")
    except (ValueError, OverflowError, OSError) as exc:
        if isinstance(exc, BadScheduledTime):
            raise
        raise BadScheduledTime(f"{where} must be an RFC 3339 timestamp or Unix seconds") from None


def scheduled_time(
    headers: Mapping[str, str],
    body: bytes,
    *,
    trust_headers: bool = True,
    max_depth: int = jsonlimits.DEFAULT_MAX_DEPTH,
) -> str | None:
    """The scheduled time a tick names (canonical UTC, e.g. `2026-01-31T09:00:00Z`), or None.

    Headers (lower-case names) win over the body field, unless `trust_headers` is off: an HMAC
    signature covers the body but not these headers, and a time in an unsigned header would let
    a captured tick be replayed as a new one. Raises `BadScheduledTime` if one is given but
    unreadable. A body nested deeper than `max_depth` is not read.
    """
    for name in SCHEDULED_TIME_HEADERS if trust_headers else ():
        if headers.get(name):
            return _parse_time(headers[name], f"header {name}")
    if b'"' + SCHEDULED_TIME_FIELD.encode() + b'"' not in body:
        return None  # most ticks: skip parsing the body
    try:
        document = jsonlimits.loads(body, max_depth)
    except orjson.JSONDecodeError:
        return None
    if isinstance(document, dict) and document.get(SCHEDULED_TIME_FIELD) is not None:
        return _parse_time(document[SCHEDULED_TIME_FIELD], f"body field {SCHEDULED_TIME_FIELD}")
    return None


def _trigger_data(event: InboxEvent) -> dict[str, Any]:
    headers = dict(event.headers)
    try:
        scheduled_at = scheduled_time(headers, event.body, max_depth=event.max_json_depth)
    except BadScheduledTime:
        scheduled_at = None  # refused at ingest, so never stored; kept total for safety
    return {
        "event_id": str(event.id),
        "workflow_id": event.source_id,
        "scheduled_at": scheduled_at,
        "received_at": event.received_at,
        "headers": headers,
        "body": parse_body(event.body, headers.get("content-type", ""), event.max_json_depth),
    }


def validate_config(config: Mapping[str, Any]) -> None:
    """What the JSON Schema leaves open: no fields of the other auth mode, a valid filter."""
    auth = config["auth"]
    for mode, fields in _AUTH_FIELDS.items():
        if mode != auth:
            for field in fields:
                if field in config:
                    raise TriggerConfigError(f"trigger.config.{field}", f"is only for auth {mode!r}")
    check_filter(config)


async def _check(conn: asyncpg.Connection, owner_id: UUID, config: Mapping[str, Any]) -> None:
    validate_config(config)
    if config["auth"] == "hmac":
        await check_endpoint(conn, owner_id, config["endpoint_id"])


def _manual(run: ManualRun) -> dict[str, Any]:
    return {
        "event_id": None,
        "workflow_id": run.workflow_id,
        "scheduled_at": run.now,
        "received_at": run.now,
        "headers": {},
        "body": run.given,
    }


TRIGGER = TriggerType(
    name=NAME,
    source_type=SOURCE_TYPE,
    description="An outside scheduler POSTs to /ingest/ticks/{workflow id}, signed (HMAC) or with an OIDC token.",
    config_schema=CONFIG_SCHEMA,
    routing_key=lambda config: WORKFLOW_ROUTE,
    trigger_data=_trigger_data,
    match=match_filter,
    check_config=_check,
    manual_data=_manual,
    manual_doc="The request body is the tick's body; `scheduled_at` is now: trigger data "
    '{"event_id": null, "workflow_id", "scheduled_at", "received_at", "headers": {}, "body": <request body>}.',
)
