"""Endpoints (create with the secret shown once, rotate, delete) and credentials (connect links, delete)."""

from __future__ import annotations

import shlex
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from ingest.api import credentials as credentials_api
from ingest.api import endpoints as endpoints_api
from ingest.api.common import path_id
from ingest.console import web
from ingest.console.web import Session, page, render
from ingest.errors import Invalid, NotFound
from ingest.signatures import DEFAULT_SCHEME, SCHEMES
from oauth.providers import OAUTH_PROVIDERS
from schemas.store import credentials, endpoints

LISTED = 200
SAMPLE_BODY = '{"hello": "world"}'


async def _endpoints_page(request: Request, session: Session, **extra: Any) -> Response:
    async with session.state.pool.acquire() as conn:
        rows = await endpoints.list_endpoints(conn, session.owner_id, limit=LISTED)
    base = session.state.settings.base_url
    context = {
        "endpoints": [endpoints_api.endpoint_json(r, base) for r in rows[:LISTED]],
        "schemes": sorted(SCHEMES),
        "default_scheme": DEFAULT_SCHEME,
        "error": None,
        "name": "",
    }
    status = 422 if extra.get("error") else 200
    return render(request, "endpoints.html", context | extra, status)


@page
async def endpoints_page(request: Request, session: Session) -> Response:
    """The owner's endpoints and a form to create one."""
    return await _endpoints_page(request, session)


def curl_command(ingest_url: str, secret: str, scheme: str) -> str:
    """A ready-to-paste signed test delivery, using `hookyard sign`."""
    sign = f'hookyard sign --secret {shlex.quote(secret)} --scheme {shlex.quote(scheme)} --body "$BODY" --curl'
    return f'BODY={shlex.quote(SAMPLE_BODY)}\ncurl -s -X POST {shlex.quote(ingest_url)} $({sign}) -d "$BODY"'


def _secret_page(request: Request, endpoint: dict[str, Any], secret: str, rotated_until: str | None) -> Response:
    return render(
        request,
        "endpoint_secret.html",
        {
            "endpoint": endpoint,
            "secret": secret,
            "rotated_until": rotated_until,
            "curl": curl_command(endpoint["ingest_url"], secret, endpoint["scheme"]),
        },
    )


@page
async def create_endpoint(request: Request, session: Session) -> Response:
    """Create an endpoint and show its secret, this once."""
    name = session.form.get("name", "").strip()
    body: dict[str, Any] = {"scheme": session.form.get("scheme") or DEFAULT_SCHEME}
    if name:
        body["name"] = name
    try:
        created = await endpoints_api.create(session.state, session.owner_id, body)
    except Invalid as exc:
        return await _endpoints_page(request, session, error=exc.message, error_field=exc.field, name=name)
    secret = created.pop("secret")
    return _secret_page(request, created, secret, None)


@page
async def rotate_endpoint(request: Request, session: Session) -> Response:
    """Make a new secret; the previous one keeps working for the grace period."""
    endpoint_id = path_id(request, "endpoint")
    rotated = await endpoints_api.rotate(session.state, session.owner_id, endpoint_id, {})
    async with session.state.pool.acquire() as conn:
        row = await endpoints.get_endpoint(conn, session.owner_id, endpoint_id)
    view = endpoints_api.endpoint_json(row, session.state.settings.base_url)
    return _secret_page(request, view, rotated["secret"], rotated["previous_valid_until"])


@page
async def delete_endpoint(request: Request, session: Session) -> Response:
    """Delete; deliveries are refused from now on, its events stay."""
    await endpoints_api.delete(session.state, session.owner_id, path_id(request, "endpoint"))
    return web.redirect("/endpoints")


async def _credentials_page(request: Request, session: Session, **extra: Any) -> Response:
    async with session.state.pool.acquire() as conn:
        rows = await credentials.list_credentials(conn, session.owner_id, limit=LISTED)
    context = {
        "credentials": [credentials_api.credential_json(r) for r in rows[:LISTED]],
        "providers": OAUTH_PROVIDERS,
        "link": None,
        "error": None,
    }
    status = 422 if extra.get("error") else 200
    return render(request, "credentials.html", context | extra, status)


@page
async def credentials_page(request: Request, session: Session) -> Response:
    """The owner's credentials with their status, and connect links."""
    return await _credentials_page(request, session)


async def _link(request: Request, session: Session, body: dict[str, Any], for_name: str | None) -> Response:
    try:
        link = await credentials_api.connect_link(session.state, session.owner_id, body)
    except Invalid as exc:
        return await _credentials_page(request, session, error=exc.message)
    return await _credentials_page(request, session, link=link, link_for=for_name)


@page
async def connect_link(request: Request, session: Session) -> Response:
    """A new connect link for a provider, with the scopes asked for (one per line)."""
    body: dict[str, Any] = {"provider": session.form.get("provider", "")}
    scopes = [s.strip() for s in session.form.get("scopes", "").split() if s.strip()]
    if scopes:
        body["scopes"] = scopes
    return await _link(request, session, body, None)


@page
async def reconnect(request: Request, session: Session) -> Response:
    """One click: a new connect link for the same provider and scopes as this credential."""
    credential_id = path_id(request, "credential")
    async with session.state.pool.acquire() as conn:
        row = await credentials.get_credential(conn, session.owner_id, credential_id)
    if row.kind != "oauth2":
        raise NotFound("no such credential")
    body = {"provider": row.provider, "scopes": list(row.scopes)[:30]}
    return await _link(request, session, body, row.name)


@page
async def delete_credential(request: Request, session: Session) -> Response:
    """Revoke at the provider, then delete."""
    await credentials_api.delete(session.state, session.owner_id, path_id(request, "credential"))
    return web.redirect("/credentials")
