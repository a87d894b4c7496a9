"""`/api/catalog`: the trigger and action types a workflow may use, with their config schemas,
and the providers a credential may be for."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from actions.registry import ACTIONS
from ingest.api.common import json_response
from ingest.api.operations import Reply, operation
from oauth.providers import PROVIDERS
from schemas.notification_types import ENVELOPE_SCHEMA, EVENT_TYPES
from triggers.registry import TRIGGERS


def catalog() -> dict[str, Any]:
    """Every registered trigger and action type, every credential provider and every
    notification event type (with the envelope deliveries carry), sorted by name."""
    return {
        "triggers": [
            {
                "type": t.name,
                "description": t.description,
                "config_schema": t.config_schema,
                "manual_run": t.manual_doc or "The request body is the trigger data.",
            }
            | ({"data_schema": t.data_schema} if t.data_schema is not None else {})
            for t in sorted(TRIGGERS.values(), key=lambda t: t.name)
        ],
        "actions": [
            {"type": a.name, "description": a.description, "config_schema": a.config_schema}
            for a in sorted(ACTIONS.values(), key=lambda a: a.name)
        ],
        "providers": [
            {
                "name": p.name,
                "display_name": p.title,
                "kind": p.kind,
                "description": p.description,
                "secret_shapes": [list(shape) for shape in p.secret_shapes] if p.kind == "api_key" else [],
                "rate_per_s": p.rate_per_s,
            }
            for p in sorted(PROVIDERS.values(), key=lambda p: p.name)
        ],
        "notification_types": [
            {"type": t.name, "version": t.version, "description": t.description, "data_schema": t.data_schema}
            for t in sorted(EVENT_TYPES.values(), key=lambda t: t.name)
        ],
        "notification_envelope": ENVELOPE_SCHEMA,
    }


@operation(
    "GET",
    "/api/catalog",
    "Trigger and action types, and credential providers",
    "catalog",
    {200: Reply("OK", "Catalog")},
    public=True,
    storage=False,
)
async def get_catalog(request: Request) -> Response:
    """The catalog; public, since it describes the service rather than anyone's data."""
    return json_response(catalog())
