"""The browser side of connect links: start Google's consent, and its callback.

`GET /oauth/connect/{token}` checks the link (signature, expiry, single use), keeps a one-time
`state` with the PKCE verifier in Redis (with a TTL), binds it to this browser with a cookie and
redirects to Google. `GET /oauth/callback` consumes the state, exchanges the code, and stores
the tokens encrypted, updating the credential of an account connected before. Every failure
answers a small page saying what went wrong, and stores nothing.
"""

from __future__ import annotations

import hashlib
import hmac
import html
import logging
from urllib.parse import urlencode, urlsplit, urlunsplit
from uuid import UUID

import orjson
import redis.asyncio as redis
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response

from ingest.state import AppState, app_state
from oauth.google import OAuthFlowError, ProviderUnavailable, new_pkce_verifier, new_state
from oauth.links import BadLink, verify_link_token
from schemas.errors import NotFound
from schemas.store import credentials as store

log = logging.getLogger(__name__)

_STATE_KEY = "hookyard:oauth:state:"
_COOKIE = "hookyard_oauth"


class ConnectFailed(Exception):
    """A connect step failed; `status` and the message make the page shown."""

    def __init__(self, status: int, title: str, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.title = title
        self.detail = detail


def page(status: int, title: str, detail: str) -> HTMLResponse:
    """A minimal, self-contained result page."""
    body = (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        "<style>body{font-family:system-ui,sans-serif;max-width:36rem;margin:4rem auto;padding:0 1rem}</style>"
        f"</head><body><h1>{html.escape(title)}</h1><p>{html.escape(detail)}</p></body></html>"
    )
    return HTMLResponse(body, status_code=status, headers={"cache-control": "no-store"})


def _state_digest(state: str) -> str:
    return hashlib.sha256(state.encode()).hexdigest()


async def start_connect(request: Request) -> Response:
    """Open a connect link: redirect to the provider's consent screen."""
    app = app_state(request)
    try:
        link_id = await _usable_link(app, request.path_params["token"])
        if app.google is None:
            raise ConnectFailed(503, "Not available", "Google sign-in is not configured on this server.")
        state, verifier = new_state(), new_pkce_verifier()
        async with app.pool.acquire() as conn:
            link = await store.get_connect_link(conn, link_id)  # checked by _usable_link
        record = orjson.dumps({"link_id": str(link_id), "verifier": verifier})
        try:
            await app.redis.set(_STATE_KEY + _state_digest(state), record, ex=app.settings.oauth_state_ttl_s)
        except (redis.RedisError, OSError):
            raise ConnectFailed(503, "Try again shortly", "The service is briefly unavailable.") from None
        url = app.google.authorization_url(list(link.scopes), state, verifier, link.account_email)
    except ConnectFailed as exc:
        return page(exc.status, exc.title, exc.detail)
    response = RedirectResponse(url, status_code=302, headers={"cache-control": "no-store"})
    # Binds the state to this browser: a callback arriving elsewhere is refused (RFC 9700 §4.7).
    response.set_cookie(
        _COOKIE,
        _state_digest(state),
        max_age=app.settings.oauth_state_ttl_s,
        path="/oauth",
        httponly=True,
        secure=request.url.scheme == "https",
        samesite="lax",
    )
    return response


async def _usable_link(app: AppState, token: str) -> UUID:
    try:
        link_id = verify_link_token(app.keyring, token)
    except BadLink:
        raise ConnectFailed(400, "Invalid link", "This connect link is not valid. Ask for a new one.") from None
    try:
        async with app.pool.acquire() as conn:
            link = await store.get_connect_link(conn, link_id)
    except NotFound:
        raise ConnectFailed(404, "Link not found", "This connect link does not exist (any more).") from None
    if link.used_at is not None:
        raise ConnectFailed(410, "Link already used", "This connect link has been used. Ask for a new one.")
    if link.expired:
        raise ConnectFailed(410, "Link expired", "This connect link has expired. Ask for a new one.")
    return link_id


async def oauth_callback(request: Request) -> Response:
    """Finish a connection: exchange the code and store the tokens, or explain the failure."""
    app = app_state(request)
    try:
        return await _finish(app, request)
    except ConnectFailed as exc:
        return page(exc.status, exc.title, exc.detail)


async def _finish(app: AppState, request: Request) -> Response:
    params = request.query_params
    state = params.get("state")
    if not state:
        raise ConnectFailed(400, "Invalid request", "The sign-in response is missing its state.")
    digest = _state_digest(state)
    try:
        raw = await app.redis.getdel(_STATE_KEY + digest)
    except (redis.RedisError, OSError):
        raise ConnectFailed(503, "Try again shortly", "The service is briefly unavailable.") from None
    if raw is None:
        raise ConnectFailed(
            400, "Sign-in expired", "This sign-in has expired or was already completed. Open the link again."
        )
    cookie = request.cookies.get(_COOKIE, "")
    if not hmac.compare_digest(cookie.encode(), digest.encode()):
        raise ConnectFailed(400, "Different browser", "Finish the sign-in in the browser that started it.")
    record = orjson.loads(raw)
    link_id = UUID(record["link_id"])
    error = params.get("error")
    if error:
        reason = "You declined access." if error == "access_denied" else f"Google answered: {error[:100]}."
        raise ConnectFailed(400, "Not connected", f"{reason} Nothing was stored.")
    code = params.get("code")
    if not code:
        raise ConnectFailed(400, "Invalid request", "The sign-in response has no authorization code.")
    if app.google is None or app.http is None:
        raise ConnectFailed(503, "Not available", "Google sign-in is not configured on this server.")
    try:
        tokens = await app.google.exchange_code(app.http, code, record["verifier"])
    except ProviderUnavailable:
        raise ConnectFailed(502, "Try again", "Google could not be reached. Open the link again.") from None
    except OAuthFlowError as exc:
        raise ConnectFailed(400, "Not connected", f"{exc}. Nothing was stored.") from None
    if not tokens.email:
        raise ConnectFailed(400, "Not connected", "Google did not say which account this is. Nothing was stored.")
    gone = ConnectFailed(410, "Link no longer valid", "This connect link was used or has expired.")
    async with app.pool.acquire() as conn, conn.transaction():
        try:
            link = await store.get_connect_link(conn, link_id)
        except NotFound:
            raise gone from None
        if link.used_at is not None or link.expired:
            raise gone
        if link.account_email is not None and link.account_email.lower() != tokens.email.lower():
            # A reconnect link: another account would be connected beside, not instead of, it.
            detail = f"This link reconnects {link.account_email}. Sign in with that account; nothing was stored."
            raise ConnectFailed(400, "Different account", detail)
        scopes = tokens.scopes or list(link.scopes)
        row, created = await store.upsert_oauth(
            conn,
            app.keyring,
            link.owner_id,
            link.provider,
            tokens.email,
            scopes,
            tokens.secret(),
            tokens.expires_at,
        )
        if not await store.use_connect_link(conn, link_id, row.id):
            raise gone
    log.info("credential %s %s via connect link %s", row.id, "connected" if created else "reconnected", link_id)
    if link.redirect_after:
        target = _with_query(link.redirect_after, {"credential_id": str(row.id), "status": "connected"})
        response: Response = RedirectResponse(target, status_code=303)
    else:
        response = page(200, "Connected", f"{tokens.email} is connected. You can close this page.")
    response.delete_cookie(_COOKIE, path="/oauth")
    return response


def _with_query(url: str, extra: dict[str, str]) -> str:
    parts = urlsplit(url)
    query = f"{parts.query}&{urlencode(extra)}" if parts.query else urlencode(extra)
    return urlunsplit((parts.scheme, parts.netloc, parts.path, query, parts.fragment))
