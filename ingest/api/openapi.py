"""`/api/openapi.json`: an OpenAPI 3.1 description of every route, written by hand."""

from __future__ import annotations

from functools import cache
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from ingest.api.common import MAX_LIMIT, json_response
from ingest.api.events import STATUSES as EVENT_STATUSES
from ingest.api.executions import STATUSES as EXECUTION_STATUSES
from ingest.api.openapi_schemas import component_schemas, ref

_ERRORS = {
    "400": "Malformed JSON, or a bad query parameter or cursor.",
    "401": "Missing or unknown API key.",
    "404": "No such object, or it belongs to another owner.",
    "409": "The workflow is inactive.",
    "422": "The body does not satisfy the schema; `field` names the place.",
}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _page(item: str) -> dict[str, Any]:
    return {
        "type": "object",
        "required": ["items", "next_cursor"],
        "properties": {
            "items": {"type": "array", "items": ref(item)},
            "next_cursor": {"type": ["string", "null"], "description": "Pass as `cursor`."},
        },
    }


def _query(name: str, schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False, "schema": schema, "description": description}


def _id_param(name: str = "id") -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "schema": {"type": "string", "format": "uuid"}}


_PAGING = [
    _query("limit", {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT, "default": 50}, "Page size."),
    _query("cursor", {"type": "string"}, "`next_cursor` of the previous page."),
]


def _op(
    summary: str,
    tag: str,
    responses: dict[str, Any],
    *,
    body: str | None = None,
    params: list[dict[str, Any]] | None = None,
    errors: tuple[str, ...] = ("401",),
    public: bool = False,
) -> dict[str, Any]:
    operation: dict[str, Any] = {"summary": summary, "tags": [tag], "responses": dict(responses)}
    if body is not None:
        operation["requestBody"] = {"required": True, **_json(ref(body), body)}
    if params:
        operation["parameters"] = params
    for code in errors:
        operation["responses"][code] = _json(ref("Error"), _ERRORS[code])
    if public:
        operation["security"] = []
    return operation


def _ok(schema: str | dict[str, Any], status: str = "200", description: str = "OK") -> dict[str, Any]:
    return {status: _json(ref(schema) if isinstance(schema, str) else schema, description)}


_DELETED = {"204": {"description": "Deleted."}}
_METRICS = {
    "200": {
        "description": "Prometheus text format, or OpenMetrics when the Accept header asks for it.",
        "content": {"text/plain": {"schema": {"type": "string"}}},
    }
}


def _tick_op() -> dict[str, Any]:
    tick = _op(
        "Tick a schedule.tick workflow (from Cloud Scheduler, a CronJob, ...)",
        "ingest",
        {
            **_ok({"type": "object"}, "202", "Stored: `{event_id, duplicate: false}`."),
            **_ok({"type": "object"}, "200", "This scheduled time was already stored."),
            "400": _json(ref("Error"), "The scheduled time given cannot be read."),
            "413": _json(ref("Error"), "Body larger than the configured limit."),
        },
        params=[_id_param("trigger_id")],
        errors=("401", "404"),
        public=True,
    )
    tick["description"] = (
        "Signed like a webhook of the configured endpoint, or `Authorization: Bearer <Google OIDC token>`. "
        "Deduplicated on `X-Scheduled-Time` / `X-CloudScheduler-ScheduleTime` or body `scheduled_time`."
    )
    tick["requestBody"] = {"required": False, "content": {"*/*": {"schema": {}}}}
    return tick


def _service_paths() -> dict[str, Any]:
    hook_headers = "Signature headers of the endpoint's scheme (standard-webhooks, github, ...)."
    hook = _op(
        "Deliver a webhook",
        "ingest",
        {
            **_ok({"type": "object"}, "202", "Stored: `{event_id, duplicate: false}`."),
            **_ok({"type": "object"}, "200", "Already stored: `{event_id, duplicate: true}`."),
            "413": _json(ref("Error"), "Body larger than the configured limit."),
        },
        params=[_id_param("endpoint_id")],
        errors=("401", "404"),
        public=True,
    )
    hook["description"] = hook_headers
    hook["requestBody"] = {"required": True, "content": {"*/*": {"schema": {}}}}
    return {
        "/hooks/{endpoint_id}": {"post": hook},
        "/ingest/ticks/{trigger_id}": {"post": _tick_op()},
        "/healthz": {"get": _op("Liveness", "health", _ok({"type": "object"}), errors=(), public=True)},
        "/readyz": {
            "get": _op(
                "Readiness",
                "health",
                {**_ok({"type": "object"}), "503": {"description": "PostgreSQL unreachable."}},
                errors=(),
                public=True,
            )
        },
        "/metrics": {"get": _op("Prometheus metrics of this process", "health", _METRICS, errors=(), public=True)},
        "/api/catalog": {"get": _op("Trigger and action types", "catalog", _ok("Catalog"), errors=(), public=True)},
        "/api/openapi.json": {"get": _op("This document", "catalog", _ok({"type": "object"}), errors=(), public=True)},
    }


def _endpoint_paths() -> dict[str, Any]:
    tag, one = "endpoints", [_id_param()]
    rotate = _op(
        "Rotate the secret; the previous one stays valid for a grace period",
        tag,
        _ok("SecretRotated"),
        body="SecretRotate",
        params=one,
        errors=("400", "401", "404", "422"),
    )
    rotate["requestBody"]["required"] = False  # no body: a secret is generated
    return {
        "/api/endpoints": {
            "get": _op("List endpoints", tag, _ok(_page("Endpoint")), params=_PAGING, errors=("400", "401")),
            "post": _op(
                "Create an endpoint (the secret is shown once)",
                tag,
                _ok("EndpointCreated", "201", "Created."),
                body="EndpointCreate",
                errors=("400", "401", "422"),
            ),
        },
        "/api/endpoints/{id}": {
            "get": _op("Get an endpoint", tag, _ok("Endpoint"), params=one, errors=("401", "404")),
            "delete": _op("Delete an endpoint", tag, _DELETED, params=one, errors=("401", "404")),
        },
        "/api/endpoints/{id}/rotate-secret": {"post": rotate},
    }


_RUN_QUEUED = {
    "type": "object",
    "required": ["execution_id", "status"],
    "properties": {"execution_id": {"type": "string", "format": "uuid"}, "status": {"const": "queued"}},
}


def _workflow_paths() -> dict[str, Any]:
    tag, one = "workflows", [_id_param()]
    status = _query("status", {"enum": list(EXECUTION_STATUSES)}, "Only executions in this status.")
    toggled = _ok("WorkflowToggled")
    return {
        "/api/workflows": {
            "get": _op("List workflows", tag, _ok(_page("Workflow")), params=_PAGING, errors=("400", "401")),
            "post": _op(
                "Create a workflow",
                tag,
                _ok("WorkflowSaved", "201", "Created."),
                body="WorkflowCreate",
                errors=("400", "401", "422"),
            ),
        },
        "/api/workflows/{id}": {
            "get": _op("Get a workflow", tag, _ok("Workflow"), params=one, errors=("401", "404")),
            "patch": _op(
                "Change a workflow",
                tag,
                _ok("WorkflowSaved"),
                body="WorkflowPatch",
                params=one,
                errors=("400", "401", "404", "422"),
            ),
            "delete": _op("Delete a workflow", tag, _DELETED, params=one, errors=("401", "404")),
        },
        "/api/workflows/{id}/activate": {
            "post": _op("Activate", tag, toggled, params=one, errors=("401", "404")),
        },
        "/api/workflows/{id}/deactivate": {
            "post": _op("Deactivate and cancel queued executions", tag, toggled, params=one, errors=("401", "404")),
        },
        "/api/workflows/{id}/run": {
            "post": {
                **_op(
                    "Run now with the body as trigger data (the filter is skipped)",
                    tag,
                    _ok(_RUN_QUEUED, "202", "Queued."),
                    params=one,
                    errors=("400", "401", "404", "409", "422"),
                ),
                "requestBody": {"required": False, **_json({"type": "object"}, "Trigger data.")},
            },
        },
        "/api/workflows/{id}/executions": {
            "get": _op(
                "List a workflow's executions",
                "executions",
                _ok(_page("Execution")),
                params=[*one, status, *_PAGING],
                errors=("400", "401", "404"),
            ),
        },
    }


def _history_paths() -> dict[str, Any]:
    one = [_id_param()]
    status = _query("status", {"enum": list(EVENT_STATUSES)}, "Only events in this status.")
    endpoint = _query("endpoint_id", {"type": "string", "format": "uuid"}, "Only this endpoint's.")
    return {
        "/api/executions/{id}": {
            "get": _op("Get an execution", "executions", _ok("Execution"), params=one, errors=("401", "404")),
        },
        "/api/executions/{id}/replay": {
            "post": _op(
                "Replay an execution",
                "executions",
                _ok("Execution", "202", "Queued."),
                params=one,
                errors=("401", "404"),
            ),
        },
        "/api/events": {
            "get": _op(
                "List events (without bodies)",
                "events",
                _ok(_page("Event")),
                params=[status, endpoint, *_PAGING],
                errors=("400", "401"),
            ),
        },
        "/api/events/{id}": {
            "get": _op(
                "Get an event: verification, dedup, resolution and executions",
                "events",
                _ok("EventDetail"),
                params=one,
                errors=("401", "404"),
            ),
        },
    }


@cache
def openapi_document() -> dict[str, Any]:
    """The whole document; built once, on first use."""
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "hookyard",
            "version": "0.1.0",
            "description": "Verified webhooks in, durable automations out.",
        },
        "jsonSchemaDialect": "https://json-schema.org/draft/2020-12/schema",
        "security": [{"apiKey": []}],
        "paths": {**_service_paths(), **_endpoint_paths(), **_workflow_paths(), **_history_paths()},
        "components": {
            "securitySchemes": {"apiKey": {"type": "http", "scheme": "bearer"}},
            "schemas": component_schemas(),
        },
    }


async def get_openapi(request: Request) -> Response:
    """The OpenAPI document; public."""
    return json_response(openapi_document())
