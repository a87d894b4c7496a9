"""What every console page shares: the session, CSRF checks, rendering and security headers.

A browser signs in with an owner API key, which is exchanged for a random session token in an
HttpOnly, SameSite=Strict cookie (Secure over HTTPS) and never kept by the browser. Every POST
carries a CSRF token derived from the session token (or, before sign-in, equal to a pre-session
cookie); a POST without a matching one changes nothing. Pages never run inline script, so the
Content-Security-Policy allows scripts and styles from the console's own static files only.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cache
from typing import Any
from urllib.parse import parse_qsl, urlsplit
from uuid import UUID

import jinja2
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response

from ingest.errors import STORAGE_ERRORS, ApiError, NotFound
from ingest.hooks import read_body
from ingest.state import AppState, app_state
from schemas.errors import NotFound as NoSuchRow
from schemas.store import console_sessions

log = logging.getLogger(__name__)

PREFIX = "/console"
SESSION_COOKIE = "hookyard_console"
SIGNIN_COOKIE = "hookyard_console_signin"
CSRF_FIELD = "csrf_token"
# Forms are small; anything bigger is refused before parsing.
MAX_FORM_BYTES = 256 * 1024
MAX_FORM_FIELDS = 500

CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
_HEADERS = {
    "content-security-policy": CSP,
    "x-content-type-options": "nosniff",
    "referrer-policy": "same-origin",
    "x-frame-options": "DENY",
    "cache-control": "no-store",
}


class CsrfRefused(ApiError):
    """A POST without a valid CSRF token, or from another origin."""

    status, code = 403, "csrf_refused"


@dataclass
class Session:
    """A signed-in owner, with the request's parsed form (empty for GET)."""

    owner_id: UUID
    token: str
    state: AppState
    form: dict[str, str] = field(default_factory=dict)

    @property
    def csrf(self) -> str:
        """The CSRF token of this session's forms."""
        return csrf_for(self.token)


def csrf_for(secret: str) -> str:
    """The CSRF token bound to a session (or pre-session) token; unguessable without the cookie."""
    return hmac.new(secret.encode(), b"hookyard-console-csrf", hashlib.sha256).hexdigest()


@cache
def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("ingest.console", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["short"] = short_id
    env.filters["utc"] = utc_text
    env.filters["iso"] = iso_text
    return env


def short_id(value: Any) -> str:
    """The first 8 characters of an id; the page keeps the full value for copying."""
    text = str(value)
    return text if len(text) <= 12 else text[:8] + "…"


def iso_text(value: Any) -> str:
    """An ISO 8601 timestamp for `<time datetime>`; empty for None."""
    if value is None:
        return ""
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat()
    return str(value)


def utc_text(value: Any) -> str:
    """A readable UTC time, shown until the page's script switches it to the browser's zone."""
    if value is None:
        return "—"
    if isinstance(value, datetime):
        return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    return str(value)


def render(request: Request, template: str, context: dict[str, Any], status_code: int = 200) -> HTMLResponse:
    """A page from a template; `session`, `csrf` and `path` are always available to it."""
    session: Session | None = getattr(request.state, "console_session", None)
    base = {
        "session": session,
        "csrf": session.csrf if session is not None else "",
        "path": request.url.path,
        "prefix": PREFIX,
    }
    html = _environment().get_template(template).render(base | context)
    return HTMLResponse(html, status_code=status_code)


def harden(response: Response) -> Response:
    """The console's security headers on any response."""
    response.headers.update(_HEADERS)
    return response


def error_page(request: Request, status: int, title: str, message: str) -> Response:
    """An HTML error page; never a stack trace, never the submitted values."""
    return harden(render(request, "error.html", {"title": title, "message": message}, status))


def redirect(path: str) -> Response:
    """303 See Other to a console path (after a POST, the browser GETs it)."""
    return harden(RedirectResponse(PREFIX + path, status_code=303))


def secure_cookies(request: Request) -> bool:
    """Cookies are Secure whenever the console is reached over HTTPS (directly or per public URL)."""
    public = app_state(request).settings.public_url
    return request.url.scheme == "https" or public.startswith("https://")


async def read_form(request: Request) -> dict[str, str]:
    """An urlencoded form body, bounded in size, time and field count; the last value per name."""
    settings = app_state(request).settings
    raw = await read_body(request, min(MAX_FORM_BYTES, settings.max_body_bytes), settings.body_read_timeout_s)
    pairs = parse_qsl(raw.decode("utf-8", "replace"), keep_blank_values=True, max_num_fields=MAX_FORM_FIELDS)
    # NUL is refused by PostgreSQL and never meant; drop it rather than fail later.
    return {key.replace("\x00", ""): value.replace("\x00", "") for key, value in pairs}


def _same_origin(request: Request) -> bool:
    origin = request.headers.get("origin")
    if origin is None:  # not every browser sends it on same-origin posts; the token still must match
        return True
    allowed = {f"{request.url.scheme}://{request.url.netloc}"}
    public = app_state(request).settings.public_url
    if public:  # behind a proxy the Host header may name an internal address
        parts = urlsplit(public)
        allowed.add(f"{parts.scheme}://{parts.netloc}")
    return origin in allowed


def check_csrf(request: Request, form: dict[str, str], expected: str) -> None:
    """Refuse a POST from another origin or without the expected token (constant-time compare)."""
    given = form.get(CSRF_FIELD, "")
    if not _same_origin(request) or not given or not hmac.compare_digest(given, expected):
        raise CsrfRefused("this form has expired or did not come from the console; reload the page and try again")


async def current_session(request: Request) -> Session | None:
    """The signed-in owner of this request, or None."""
    token = request.cookies.get(SESSION_COOKIE)
    if not token or len(token) > 100:
        return None
    state = app_state(request)
    async with state.pool.acquire() as conn:
        owner_id = await console_sessions.session_owner(conn, token)
    return None if owner_id is None else Session(owner_id, token, state)


Handler = Callable[[Request, Session], Awaitable[Response]]
Endpoint = Callable[[Request], Awaitable[Response]]


def page(handler: Handler) -> Endpoint:
    """A console page or form action: signed in, CSRF-checked on POST, errors as HTML pages."""

    async def endpoint(request: Request) -> Response:
        try:
            session = await current_session(request)
            if session is None:
                if request.method == "GET" and not request.url.path.endswith("/rows"):
                    return redirect("/sign-in")
                return error_page(request, 401, "Signed out", "Your session has ended. Sign in again.")
            request.state.console_session = session
            if request.method == "POST":
                session.form = await read_form(request)
                check_csrf(request, session.form, session.csrf)
            return harden(await handler(request, session))
        except (NotFound, NoSuchRow):
            return error_page(request, 404, "Not found", "There is nothing here, or it is not yours.")
        except ApiError as exc:
            return error_page(request, exc.status, "That did not work", exc.message)
        except STORAGE_ERRORS:
            log.error("console: storage unavailable on %s", request.url.path)
            return error_page(request, 503, "Unavailable", "Storage is unavailable right now; try again shortly.")
        except Exception:
            log.exception("console: unhandled error on %s %s", request.method, request.url.path)
            return error_page(request, 500, "Something went wrong", "The error was logged; try again.")

    endpoint.__name__ = handler.__name__
    endpoint.__doc__ = handler.__doc__
    return endpoint


def new_signin_secret() -> str:
    """A random pre-session value; its cookie and the sign-in form's CSRF token go together."""
    return secrets.token_urlsafe(24)
