"""`webhook.received`: a verified request arrived at one of the owner's endpoints."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import parse_qsl
from uuid import UUID

import asyncpg
import orjson

from schemas import jsonlimits
from triggers.base import InboxEvent, ManualRun, TriggerType, check_endpoint, check_filter, match_filter
from triggers.filters import filter_schema

CONFIG_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["endpoint_id"],
    "additionalProperties": False,
    "properties": {
        "endpoint_id": {"type": "string", "format": "uuid", "description": "The endpoint to listen on."},
        "filter": {
            **filter_schema(),
            "description": "Optional condition over `body` and `headers` (lower-case names).",
        },
    },
}


def parse_body(body: bytes, content_type: str, max_depth: int = jsonlimits.DEFAULT_MAX_DEPTH) -> Any:
    """JSON when it parses, form fields for form posts, else the text (so filters can see it).

    JSON nested deeper than `max_depth` is text too: the body is kept, but not as a tree.
    """
    if "application/x-www-form-urlencoded" in content_type:
        return dict(parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True))
    try:
        return jsonlimits.loads(body, max_depth)
    except orjson.JSONDecodeError:
        return body.decode("utf-8", "replace")


def _trigger_data(event: InboxEvent) -> dict[str, Any]:
    headers = dict(event.headers)
    return {
        "event_id": str(event.id),
        "endpoint_id": event.source_id,
        "received_at": event.received_at,
        "headers": headers,
        "body": parse_body(event.body, headers.get("content-type", ""), event.max_json_depth),
    }


async def _check(conn: asyncpg.Connection, owner_id: UUID, config: Mapping[str, Any]) -> None:
    check_filter(config)
    await check_endpoint(conn, owner_id, config["endpoint_id"])


def _manual(run: ManualRun) -> dict[str, Any]:
    return {"event_id": None, "endpoint_id": run.source_id, "received_at": run.now, "headers": {}, "body": run.given}


TRIGGER = TriggerType(
    name="webhook.received",
    source_type="webhook",
    description="A signed request arrived at a webhook endpoint; optionally filtered.",
    config_schema=CONFIG_SCHEMA,
    # Normalised: events carry the canonical lower-case form of the endpoint id.
    routing_key=lambda config: str(UUID(str(config["endpoint_id"]))),
    trigger_data=_trigger_data,
    match=match_filter,
    check_config=_check,
    manual_data=_manual,
    manual_doc="The request body is the webhook's body: trigger data "
    '{"event_id": null, "endpoint_id", "received_at", "headers": {}, "body": <request body>}.',
)
