"""HTTP errors, mapped once to JSON responses `{"error": {"code", "message", "field"?}}`.

ApiError
 ├── BadRequest        400  malformed JSON, bad cursor or query parameter
 ├── Unauthorized      401  missing/unknown API key, bad or stale webhook signature
 ├── NotFound          404  unknown id, or one that belongs to another owner
 ├── RequestTimeout    408  the body did not arrive within the body-read timeout
 ├── Conflict          409
 ├── PayloadTooLarge   413
 ├── Invalid           422  body does not satisfy the schema; `field` names the place
 ├── ClientGone        499  the client closed the connection mid-body (nobody reads the answer)
 └── Unavailable       503  storage unreachable: the sender should retry

The store's own `schemas.errors.NotFound` (no such row for this owner) is answered here too,
as the same 404 `not_found`, so handlers need not check for missing rows themselves.
"""

from __future__ import annotations

import logging

import asyncpg
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from ingest.inbox import InboxClosed
from schemas import db
from schemas.errors import NotFound as NoSuchRow

log = logging.getLogger(__name__)


class ApiError(Exception):
    """An error with an HTTP status and a stable machine-readable code."""

    status = 500
    code = "internal_error"

    def __init__(self, message: str, *, field: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field
        if code:
            self.code = code


class BadRequest(ApiError):
    status, code = 400, "bad_request"


class Unauthorized(ApiError):
    status, code = 401, "unauthorized"


class NotFound(ApiError):
    status, code = 404, "not_found"


class RequestTimeout(ApiError):
    status, code = 408, "request_timeout"


class ClientGone(ApiError):
    # nginx's 499: logged and measured as such, never an "unhandled error".
    status, code = 499, "client_closed_request"


class Conflict(ApiError):
    status, code = 409, "conflict"


class PayloadTooLarge(ApiError):
    status, code = 413, "payload_too_large"


class Invalid(ApiError):
    status, code = 422, "invalid"


class Unavailable(ApiError):
    status, code = 503, "unavailable"


def error_response(status: int, code: str, message: str, field: str | None = None) -> JSONResponse:
    """The one JSON shape every error takes."""
    body: dict[str, object] = {"code": code, "message": message}
    if field:
        body["field"] = field
    headers = {"retry-after": "5"} if status == 503 else None
    return JSONResponse({"error": body}, status_code=status, headers=headers)


async def _api_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    return error_response(exc.status, exc.code, exc.message, exc.field)


async def _no_such_row(request: Request, exc: Exception) -> Response:
    # The store found no row for this owner: the same 404 as an unknown id in the path.
    assert isinstance(exc, NoSuchRow)
    return error_response(NotFound.status, NotFound.code, str(exc))


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    codes = {404: "not_found", 405: "method_not_allowed"}
    response = error_response(exc.status_code, codes.get(exc.status_code, "http_error"), str(exc.detail))
    # A 405 must say which methods the path allows (RFC 9110 §15.5.6); Starlette puts them here.
    response.headers.update(exc.headers or {})
    return response


async def _storage_down(request: Request, exc: Exception) -> Response:
    log.error("storage unavailable: %s", type(exc).__name__)
    return error_response(503, "unavailable", "storage is unavailable; retry later")


async def _unexpected(request: Request, exc: Exception) -> Response:
    log.exception("unhandled error on %s %s", request.method, request.url.path)
    return error_response(500, "internal_error", "internal error")


# The database being unavailable (schemas.db's one classification) means "try again later",
# never "your request was bad"; a closing inbox likewise.
STORAGE_ERRORS: tuple[type[Exception], ...] = (*db.STORAGE_ERRORS, InboxClosed)


async def _unstorable(request: Request, exc: Exception) -> Response:
    # Values PostgreSQL refuses (NUL characters, numbers out of range): the input's fault.
    log.info("unstorable input on %s: %s", request.url.path, type(exc).__name__)
    return error_response(422, "invalid", "the request holds a value that cannot be stored")


EXCEPTION_HANDLERS = {
    ApiError: _api_error,
    NoSuchRow: _no_such_row,
    HTTPException: _http_error,
    **{exc: _storage_down for exc in STORAGE_ERRORS},
    asyncpg.DataError: _unstorable,
    Exception: _unexpected,
}
