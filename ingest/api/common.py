"""Request parsing and response shapes shared by every API handler."""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from typing import Any
from uuid import UUID

import orjson
from starlette.requests import Request
from starlette.responses import Response

from ingest.errors import BadRequest, Invalid, NotFound
from ingest.hooks import read_body
from ingest.state import app_state
from schemas import jsonlimits
from schemas.sanitize import has_nul
from schemas.store.pagination import BadCursor, decode_cursor, page

DEFAULT_LIMIT = 50
MAX_LIMIT = 200


def _encode_other(value: Any) -> str:
    # asyncpg returns its own UUID subclass, which orjson only serialises through this hook.
    if isinstance(value, UUID):
        return str(value)
    raise TypeError(f"cannot serialise {type(value).__name__} as JSON")


def json_response(content: Any, status_code: int = 200) -> Response:
    """A JSON response; datetimes and UUIDs serialise as ISO 8601 and canonical strings.

    Values nested too deep to encode (rows stored before bodies were depth-bounded) are
    shown as a placeholder rather than failing the request.
    """
    body = jsonlimits.dumps_bounded(content, default=_encode_other)
    return Response(body, status_code=status_code, media_type="application/json")


def no_content() -> Response:
    """The answer to a successful DELETE."""
    return Response(status_code=204)


async def read_json(request: Request, *, optional: bool = False) -> dict[str, Any]:
    """The request body as a JSON object: 400 if it is not JSON, 422 if not an object or if it
    nests deeper than the `max_json_depth` setting.

    With `optional`, an empty body reads as `{}`.
    """
    settings = app_state(request).settings
    raw = await read_body(request, settings.max_body_bytes, settings.body_read_timeout_s)
    if optional and not raw.strip():
        return {}
    try:
        data = jsonlimits.loads(raw, settings.max_json_depth)
    except jsonlimits.JsonTooDeep as exc:
        raise Invalid(f"request body nests deeper than {exc.limit} levels") from None
    except orjson.JSONDecodeError:
        raise BadRequest("request body is not valid JSON") from None
    if not isinstance(data, dict):
        raise Invalid("request body must be a JSON object")
    if has_nul(data):
        raise Invalid("strings must not contain NUL (\\u0000) characters")
    return data


def path_id(request: Request, kind: str, name: str = "id") -> UUID:
    """A UUID path parameter; a malformed one names nothing that exists, hence 404."""
    try:
        return UUID(request.path_params[name])
    except ValueError:
        raise NotFound(f"no such {kind}") from None


@dataclass(frozen=True, slots=True)
class PageQuery:
    """`limit` and the seq the `cursor` points after."""

    limit: int
    after_seq: int | None


def page_query(request: Request) -> PageQuery:
    """Read `limit` (1..200, default 50) and `cursor`; 400 on bad values."""
    raw_limit = request.query_params.get("limit")
    limit = DEFAULT_LIMIT
    if raw_limit is not None:
        if not (raw_limit.isascii() and raw_limit.isdigit()) or not 1 <= int(raw_limit) <= MAX_LIMIT:
            raise BadRequest(f"limit must be an integer from 1 to {MAX_LIMIT}", field="limit")
        limit = int(raw_limit)
    try:
        after_seq = decode_cursor(request.query_params.get("cursor"))
    except BadCursor:
        raise BadRequest("cursor is not valid; pass next_cursor from a previous page", field="cursor") from None
    return PageQuery(limit, after_seq)


def query_choice(request: Request, name: str, allowed: Collection[str]) -> str | None:
    """An optional query parameter restricted to `allowed` values; 400 otherwise."""
    value = request.query_params.get(name)
    if value is not None and value not in allowed:
        raise BadRequest(f"{name} must be one of: {', '.join(allowed)}", field=name)
    return value


def query_uuid(request: Request, name: str) -> UUID | None:
    """An optional UUID query parameter; 400 if malformed."""
    value = request.query_params.get(name)
    if value is None:
        return None
    try:
        return UUID(value)
    except ValueError:
        raise BadRequest(f"{name} must be a UUID", field=name) from None


def page_response(rows: Sequence[Any], query: PageQuery, render: Callable[[Any], dict[str, Any]]) -> Response:
    """`{"items": [...], "next_cursor": str | null}` from rows fetched with limit+1."""
    items, next_cursor = page(rows, query.limit)
    return json_response({"items": [render(row) for row in items], "next_cursor": next_cursor})
