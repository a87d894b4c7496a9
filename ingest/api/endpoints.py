"""`/api/endpoints`: webhook endpoints and their signing secrets."""

from __future__ import annotations

import base64
import binascii
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

from starlette.requests import Request
from starlette.responses import Response

from ingest.api.auth import require_owner
from ingest.api.common import json_response, no_content, page_query, page_response, path_id, read_json
from ingest.api.operations import ID, PAGING, Body, Reply, operation, page_of
from ingest.api.validation import check, compile_schema
from ingest.errors import Invalid
from ingest.signatures import DEFAULT_SCHEME, SCHEMES, generate_secret
from ingest.state import AppState, app_state
from schemas.store import endpoints as store
from schemas.store.endpoints import Endpoint

_WHSEC_PREFIX = "whsec_"
_WHSEC_BYTES = (24, 64)
_PASTED_CHARS = (8, 256)

CREATE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "name": {"type": "string", "minLength": 1, "maxLength": 200, "default": "endpoint"},
        "scheme": {"enum": sorted(SCHEMES), "default": DEFAULT_SCHEME},
        "secret": {"type": "string", "description": "Omit to have one generated."},
    },
}
ROTATE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "properties": {"secret": CREATE_SCHEMA["properties"]["secret"]},
}
_CREATE = compile_schema(CREATE_SCHEMA)
_ROTATE = compile_schema(ROTATE_SCHEMA)


def check_secret(scheme: str, secret: str) -> None:
    """A supplied secret must be usable by the scheme; messages never quote it."""
    if scheme == "standard-webhooks":
        _check_whsec(secret)
        return
    # Stripe, Slack, Shopify and GitHub mint their own secrets; accept what users paste.
    low, high = _PASTED_CHARS
    if not low <= len(secret) <= high:
        raise Invalid(f"secret must be {low} to {high} characters long", field="secret")


def _check_whsec(secret: str) -> None:
    low, high = _WHSEC_BYTES
    problem = f"secret must be '{_WHSEC_PREFIX}' followed by base64 of {low} to {high} bytes"
    if not secret.startswith(_WHSEC_PREFIX):
        raise Invalid(problem, field="secret")
    raw = secret.removeprefix(_WHSEC_PREFIX)
    try:
        # Unpadded secrets verify fine (the verifier restores padding), so accept them here too.
        key = base64.b64decode(raw + "=" * (-len(raw) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise Invalid(problem, field="secret") from None
    if not low <= len(key) <= high:
        raise Invalid(problem, field="secret")


def endpoint_json(row: Endpoint, base_url: str) -> dict[str, Any]:
    """The API view of an endpoint (never a secret); `active_secrets` when the row counted them."""
    out: dict[str, Any] = {
        "id": str(row.id),
        "name": row.name,
        "scheme": row.scheme,
        "ingest_url": f"{base_url}/hooks/{row.id}",
        "created_at": row.created_at.isoformat(),
    }
    if row.active_secrets is not None:
        out["active_secrets"] = row.active_secrets
    return out


def _chosen_secret(scheme: str, body: dict[str, Any]) -> str:
    secret = body.get("secret")
    if secret is None:
        return generate_secret()
    check_secret(scheme, secret)
    return str(secret)


@operation(
    "POST",
    "/api/endpoints",
    "Create an endpoint (the secret is shown once)",
    "endpoints",
    {201: Reply("Created.", "EndpointCreated")},
    body=Body("EndpointCreate"),
)
async def create_endpoint(request: Request) -> Response:
    """Create an endpoint; its secret is in this response and never shown again."""
    owner_id = await require_owner(request)
    body = await read_json(request)
    return json_response(await create(app_state(request), owner_id, body), 201)


async def create(state: AppState, owner_id: UUID, body: dict[str, Any]) -> dict[str, Any]:
    """Validate a create body (`Invalid`) and store the endpoint; its view with the secret."""
    check(_CREATE, body)
    scheme = body.get("scheme", DEFAULT_SCHEME)
    secret = _chosen_secret(scheme, body)
    async with state.pool.acquire() as conn:
        row = await store.create_endpoint(conn, state.keyring, owner_id, body.get("name", "endpoint"), scheme, secret)
    view = endpoint_json(row, state.settings.base_url)
    return {**view, "secret": secret}


@operation(
    "GET", "/api/endpoints", "List endpoints", "endpoints", {200: Reply("OK", page_of("Endpoint"))}, params=PAGING
)
async def list_endpoints(request: Request) -> Response:
    """A page of the caller's endpoints, newest first."""
    owner_id = await require_owner(request)
    query = page_query(request)
    state = app_state(request)
    async with state.pool.acquire() as conn:
        rows = await store.list_endpoints(conn, owner_id, limit=query.limit, after_seq=query.after_seq)
    return page_response(rows, query, lambda row: endpoint_json(row, state.settings.base_url))


@operation("GET", "/api/endpoints/{id}", "Get an endpoint", "endpoints", {200: Reply("OK", "Endpoint")}, params=[ID])
async def get_endpoint(request: Request) -> Response:
    """One endpoint, with how many secrets currently verify requests."""
    owner_id = await require_owner(request)
    endpoint_id = path_id(request, "endpoint")
    state = app_state(request)
    async with state.pool.acquire() as conn:
        row = await store.get_endpoint(conn, owner_id, endpoint_id)
    return json_response(endpoint_json(row, state.settings.base_url))


@operation("DELETE", "/api/endpoints/{id}", "Delete an endpoint", "endpoints", {204: Reply("Deleted.")}, params=[ID])
async def delete_endpoint(request: Request) -> Response:
    """Delete an endpoint; deliveries to it are refused from now on, its events stay."""
    owner_id = await require_owner(request)
    endpoint_id = path_id(request, "endpoint")
    await delete(app_state(request), owner_id, endpoint_id)
    return no_content()


async def delete(state: AppState, owner_id: UUID, endpoint_id: UUID) -> None:
    """Delete one of the owner's endpoints (`NotFound`)."""
    async with state.pool.acquire() as conn:
        await store.delete_endpoint(conn, owner_id, endpoint_id)
    # Other processes hear of it by notification; this one need not wait for its own.
    state.endpoints.invalidate(endpoint_id)


@operation(
    "POST",
    "/api/endpoints/{id}/rotate-secret",
    "Rotate the secret; the previous one stays valid for a grace period",
    "endpoints",
    {200: Reply("OK", "SecretRotated")},
    params=[ID],
    body=Body("SecretRotate", required=False, description="Omit to have a secret generated."),
)
async def rotate_secret(request: Request) -> Response:
    """Make a new current secret; the previous ones keep verifying for the grace period."""
    owner_id = await require_owner(request)
    endpoint_id = path_id(request, "endpoint")
    body = await read_json(request, optional=True)
    return json_response(await rotate(app_state(request), owner_id, endpoint_id, body))


async def rotate(state: AppState, owner_id: UUID, endpoint_id: UUID, body: dict[str, Any]) -> dict[str, Any]:
    """Rotate one of the owner's endpoint secrets (`NotFound`, `Invalid`); the new secret and grace end."""
    check(_ROTATE, body)
    grace_s = state.settings.secret_rotation_grace_s
    async with state.pool.acquire() as conn:
        row = await store.get_endpoint(conn, owner_id, endpoint_id)
        secret = _chosen_secret(row.scheme, body)
        await store.rotate_secret(conn, state.keyring, owner_id, endpoint_id, secret, grace_s)
    state.endpoints.invalidate(endpoint_id)
    # An upper bound: a secret already due to expire sooner keeps its earlier expiry.
    valid_until = datetime.now(UTC) + timedelta(seconds=grace_s)
    return {"secret": secret, "previous_valid_until": valid_until.isoformat()}
