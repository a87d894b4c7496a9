"""Bearer API keys; every API handler starts by resolving the caller's owner id."""

from __future__ import annotations

from uuid import UUID

from starlette.requests import Request

from ingest.errors import Unauthorized
from ingest.state import app_state
from schemas.errors import NotFound
from schemas.store.owners import KeyHolder, holder_of_key


async def require_key(request: Request) -> KeyHolder:
    """The owner and the API key that authenticate this request, or 401."""
    header = request.headers.get("authorization", "")
    scheme, _, key = header.partition(" ")
    if scheme.lower() != "bearer" or not key.strip():
        raise Unauthorized("send your API key as 'Authorization: Bearer <key>'")
    try:
        async with app_state(request).pool.acquire() as conn:
            return await holder_of_key(conn, key.strip())
    except NotFound:
        raise Unauthorized("unknown or revoked API key") from None


async def require_owner(request: Request) -> UUID:
    """The owner whose API key authenticates this request, or 401."""
    return (await require_key(request)).owner_id
