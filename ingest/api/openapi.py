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
        "Deduplicated on body `scheduled_time` (HMAC and OIDC) or, with OIDC only, `X-Scheduled-Time` / "
        "`X-CloudScheduler-ScheduleTime`."
    )
    tick["requestBody"] = {"required": False, "content": {"*/*": {"schema": {}}}}
    return tick


def _gmail_push_op() -> dict[str, Any]:
    push = _op(
        "Gmail change notification, pushed by Google Pub/Sub",
        "ingest",
        {
            "204": {"description": "Acknowledged: stored once per watched mailbox, or nothing to do."},
            "400": _json(ref("Error"), "Not a wrapped Pub/Sub push carrying a Gmail notification."),
            "503": _json(ref("Error"), "Storage unavailable; Pub/Sub redelivers."),
        },
        errors=("401",),
        public=True,
    )
    push["description"] = (
        "`Authorization: Bearer <Google OIDC token>` of the configured push service account and audience. "
        "Deduplicated on the Pub/Sub message id."
    )
    push["requestBody"] = {"required": True, "content": {"application/json": {"schema": {"type": "object"}}}}
    return push


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
        "/ingest/pubsub/gmail": {"post": _gmail_push_op()},
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


def _credential_paths() -> dict[str, Any]:
    tag, one = "credentials", [_id_param()]
    html = {"content": {"text/html": {"schema": _STR_SCHEMA}}}
    connect = _op(
        "Open a connect link: redirects to the provider's consent screen",
        "oauth",
        {
            "302": {"description": "To the provider's consent screen (sets a cookie binding the sign-in)."},
            "400": {"description": "The link is not valid.", **html},
            "404": {"description": "No such link.", **html},
            "410": {"description": "The link was used or has expired.", **html},
        },
        params=[{"name": "token", "in": "path", "required": True, "schema": _STR_SCHEMA}],
        errors=(),
        public=True,
    )
    callback = _op(
        "OAuth2 callback: stores the tokens encrypted, or explains why not",
        "oauth",
        {
            "200": {"description": "Connected.", **html},
            "303": {"description": "Connected; to `redirect_after` with `credential_id` and `status`."},
            "400": {"description": "Denied, expired or reused sign-in, another browser, or a refused code.", **html},
            "410": {"description": "The link was used or expired meanwhile.", **html},
        },
        errors=(),
        public=True,
    )
    return {
        "/api/credentials": {
            "get": _op("List credentials (never secrets)", tag, _ok(_page("Credential")), params=_PAGING),
            "post": _op(
                "Store an API-key credential (Resend, Postmark, Slack, Novu)",
                tag,
                _ok("Credential", "201", "Created; the secret is never shown again."),
                body="CredentialCreate",
                errors=("400", "401", "422"),
            ),
        },
        "/api/credentials/{id}": {
            "get": _op(
                "Get a credential: provider, account, scopes, status, expiry",
                tag,
                _ok("Credential"),
                params=one,
                errors=("401", "404"),
            ),
            "delete": _op(
                "Revoke at the provider, then delete",
                tag,
                {**_DELETED, "503": _json(ref("Error"), "The provider could not be reached; nothing deleted.")},
                params=one,
                errors=("401", "404"),
            ),
        },
        "/api/connect-links": {
            "post": _op(
                "Create a connect link for an OAuth2 provider",
                tag,
                _ok("ConnectLink", "201", "Created."),
                body="ConnectLinkCreate",
                errors=("400", "401", "422"),
            )
        },
        "/oauth/connect/{token}": {"get": connect},
        "/oauth/callback": {"get": callback},
    }


_STR_SCHEMA: dict[str, Any] = {"type": "string"}

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
        "/api/executions/{id}/cancel": {
            "post": {
                **_op(
                    "Cancel an execution (a newsletter stops between batches)",
                    "executions",
                    _ok("Execution", "202", "Cancelled, or asked to stop."),
                    params=one,
                    errors=("401", "404"),
                ),
                "description": "409 if it has finished, or if an attempt of a non-newsletter action is in flight.",
            },
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
        "paths": {
            **_service_paths(),
            **_endpoint_paths(),
            **_credential_paths(),
            **_workflow_paths(),
            **_history_paths(),
        },
        "components": {
            "securitySchemes": {"apiKey": {"type": "http", "scheme": "bearer"}},
            "schemas": component_schemas(),
        },
    }


async def get_openapi(request: Request) -> Response:
    """The OpenAPI document; public."""
    return json_response(openapi_document())
