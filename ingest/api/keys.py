"""`/api/keys`: an owner's API keys: list, create (the key shown once) and revoke."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from ingest.api.auth import require_key
from ingest.api.common import json_response, no_content, page_query, page_response, path_id, read_json
from ingest.api.operations import ID, PAGING, Body, Reply, error, operation, page_of
from ingest.api.validation import check, compile_schema
from ingest.errors import Conflict
from ingest.state import app_state
from schemas.store import owners as store
from schemas.store.owners import ApiKey

CREATE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "name": {"type": "string", "minLength": 1, "maxLength": 200, "default": "default"},
    },
}
_CREATE = compile_schema(CREATE_SCHEMA)
_TAG = "keys"


def key_json(row: ApiKey) -> dict[str, Any]:
    """The API view of a key: its id, name and first characters, never the key or its hash."""
    return {
        "id": row.id,
        "name": row.name,
        "prefix": row.prefix,
        "created_at": row.created_at,
        "revoked_at": row.revoked_at,
    }


@operation(
    "GET",
    "/api/keys",
    "List API keys, active and revoked (never the keys themselves)",
    _TAG,
    {200: Reply("OK", page_of("ApiKey"))},
    params=PAGING,
)
async def list_keys(request: Request) -> Response:
    """A page of the caller's API keys, newest first."""
    holder = await require_key(request)
    query = page_query(request)
    async with app_state(request).pool.acquire() as conn:
        rows = await store.list_keys(conn, holder.owner_id, limit=query.limit, after_seq=query.after_seq)
    return page_response(rows, query, key_json)


@operation(
    "POST",
    "/api/keys",
    "Create an API key (shown once)",
    _TAG,
    {201: Reply("Created; `key` is shown only here.", "ApiKeyCreated")},
    body=Body("ApiKeyCreate", required=False),
)
async def create_key(request: Request) -> Response:
    """A new key for the caller's owner; only its hash is stored, so this is the one chance to copy it."""
    holder = await require_key(request)
    body = await read_json(request, optional=True)
    check(_CREATE, body)
    async with app_state(request).pool.acquire() as conn:
        row, key = await store.create_key(conn, holder.owner_id, body.get("name", "default"))
    return json_response({**key_json(row), "key": key}, 201)


@operation(
    "DELETE",
    "/api/keys/{id}",
    "Revoke an API key",
    _TAG,
    {204: Reply("Revoked (or it already was).")},
    params=[ID],
    errors={409: error("It is the key of this request and no other key is active; create another first.")},
)
async def revoke_key(request: Request) -> Response:
    """Revoke a key at once; the key of this request only while another key stays active."""
    holder = await require_key(request)
    key_id = path_id(request, "API key")
    async with app_state(request).pool.acquire() as conn:
        outcome = await store.revoke_key(conn, holder.owner_id, key_id, in_use=holder.key_id)
    if outcome is store.Revoked.LAST_KEY:
        raise Conflict(
            "this is the key of this request and the only active one; create another key before revoking it",
            code="last_active_key",
        )
    return no_content()
