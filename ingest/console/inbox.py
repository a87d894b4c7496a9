"""Sign-in, sign-out, the inbox and the event page."""

from __future__ import annotations

from typing import Any
from uuid import UUID

import orjson
from starlette.requests import Request
from starlette.responses import Response

from ingest.api.common import path_id
from ingest.api.events import STATUSES, event_json, parsed_body
from ingest.api.executions import execution_json
from ingest.console import web
from ingest.console.web import Session, page, render
from ingest.errors import STORAGE_ERRORS, ApiError
from ingest.state import app_state
from schemas import jsonlimits
from schemas.errors import NotFound as NoSuchRow
from schemas.store import console_sessions, endpoints, events, executions, workflows
from schemas.store.owners import holder_of_key
from schemas.store.pagination import BadCursor, decode_cursor
from schemas.store.pagination import page as paged

INBOX_PAGE = 50
# What the event page shows of a body; the API serves the whole of it.
SHOWN_BODY_BYTES = 256 * 1024
# Candidate workflows whose names the event page looks up (each is one indexed read).
NAMED_CANDIDATES = 50


async def signin_form(request: Request) -> Response:
    """The sign-in page; sets the pre-session cookie its CSRF token is checked against."""
    if await _signed_in(request):
        return web.redirect("/inbox")
    return _signin_page(request, None, 200)


def _signin_page(request: Request, error: str | None, status: int) -> Response:
    secret = web.new_signin_secret()
    response = render(request, "signin.html", {"error": error, "signin_csrf": web.csrf_for(secret)}, status)
    response.set_cookie(
        web.SIGNIN_COOKIE,
        secret,
        max_age=3600,
        path=web.PREFIX,
        httponly=True,
        samesite="strict",
        secure=web.secure_cookies(request),
    )
    return web.harden(response)


async def _signed_in(request: Request) -> bool:
    try:
        return await web.current_session(request) is not None
    except STORAGE_ERRORS:
        return False


async def signin(request: Request) -> Response:
    """Exchange an API key for a session cookie; the key itself is kept nowhere."""
    try:
        form = await web.read_form(request)
        secret = request.cookies.get(web.SIGNIN_COOKIE, "")
        if not secret:
            raise web.CsrfRefused("the sign-in form has expired; reload the page and try again")
        web.check_csrf(request, form, web.csrf_for(secret))
        key = form.get("api_key", "").strip()
        state = app_state(request)
        async with state.pool.acquire() as conn:
            try:
                holder = await holder_of_key(conn, key[:200])
            except NoSuchRow:
                return _signin_page(request, "That API key is unknown or revoked.", 401)
            token = await console_sessions.open_session(conn, holder, state.settings.console_session_ttl_s)
    except ApiError as exc:
        return web.error_page(request, exc.status, "Sign-in refused", exc.message)
    except STORAGE_ERRORS:
        return web.error_page(request, 503, "Unavailable", "Storage is unavailable right now; try again shortly.")
    response = web.redirect("/inbox")
    response.set_cookie(
        web.SESSION_COOKIE,
        token,
        max_age=state.settings.console_session_ttl_s,
        path=web.PREFIX,
        httponly=True,
        samesite="strict",
        secure=web.secure_cookies(request),
    )
    response.delete_cookie(web.SIGNIN_COOKIE, path=web.PREFIX)
    return response


@page
async def signout(request: Request, session: Session) -> Response:
    """End the session server-side and drop the cookie."""
    async with session.state.pool.acquire() as conn:
        await console_sessions.close_session(conn, session.token)
    response = web.redirect("/sign-in")
    response.delete_cookie(web.SESSION_COOKIE, path=web.PREFIX)
    return response


async def home(request: Request) -> Response:
    """`/console` itself: the inbox."""
    return web.redirect("/inbox")


def _filters(request: Request) -> tuple[str | None, str | None]:
    status = request.query_params.get("status") or None
    if status not in (None, *STATUSES):
        status = None
    source = request.query_params.get("source") or None
    if source is not None:
        try:
            source = str(UUID(source))
        except ValueError:
            source = None
    return source, status


async def _inbox_rows(session: Session, request: Request) -> tuple[list[dict[str, Any]], str | None]:
    source, status = _filters(request)
    try:
        after = decode_cursor(request.query_params.get("cursor"))
    except BadCursor:
        after = None
    async with session.state.pool.acquire() as conn:
        rows = await events.list_events(
            conn, session.owner_id, limit=INBOX_PAGE, after_seq=after, status=status, source_id=source
        )
    items, cursor = paged(rows, INBOX_PAGE)
    return [event_json(row) for row in items], cursor


@page
async def inbox(request: Request, session: Session) -> Response:
    """Events newest first, filterable by source and status; the rows refresh themselves."""
    source, status = _filters(request)
    rows, cursor = await _inbox_rows(session, request)
    async with session.state.pool.acquire() as conn:
        owned = await endpoints.list_endpoints(conn, session.owner_id, limit=200)
    return render(
        request,
        "inbox.html",
        {
            "events": rows,
            "cursor": cursor,
            "endpoints": owned[:200],
            "statuses": STATUSES,
            "source": source,
            "status": status,
            "live": request.query_params.get("cursor") is None,
        },
    )


@page
async def inbox_rows(request: Request, session: Session) -> Response:
    """The inbox's first page of rows alone, fetched by the page's script every few seconds."""
    rows, _ = await _inbox_rows(session, request)
    return render(request, "_event_rows.html", {"events": rows})


def _pretty(value: Any) -> str:
    return jsonlimits.dumps_bounded(value, option=orjson.OPT_INDENT_2).decode()


@page
async def event_page(request: Request, session: Session) -> Response:
    """One event: headers, body, verification and dedup verdicts, and why each workflow fired or not."""
    event_id = path_id(request, "event")
    async with session.state.pool.acquire() as conn:
        row = await events.get_event(conn, session.owner_id, event_id)
        produced = await executions.list_for_event(conn, session.owner_id, event_id)
        names: dict[str, str] = {}
        for candidate in (row.resolution or [])[:NAMED_CANDIDATES]:
            try:
                wf = await workflows.get_workflow(
                    conn, session.owner_id, UUID(candidate["workflow_id"]), include_deleted=True
                )
            except NoSuchRow:
                continue
            names[str(wf.id)] = wf.name
    view = event_json(row)
    body = row.body or b""
    parsed = parsed_body(body[: SHOWN_BODY_BYTES + 1], session.state.settings.max_json_depth)
    is_json = not isinstance(parsed, str) and len(body) <= SHOWN_BODY_BYTES
    return render(
        request,
        "event.html",
        {
            "event": view,
            "pretty": _pretty(parsed) if is_json else None,
            "raw": body[:SHOWN_BODY_BYTES].decode("utf-8", "replace"),
            "truncated": len(body) > SHOWN_BODY_BYTES,
            "verification": _pretty(view["verification"]),
            "executions": [execution_json(x) for x in produced],
            "names": names,
        },
    )


async def not_found(request: Request) -> Response:
    """Any other console path."""
    return web.error_page(request, 404, "Not found", "There is nothing here.")
