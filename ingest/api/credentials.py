"""`/api/credentials` and `/api/connect-links`: an owner's provider credentials.

No response ever carries a secret: API keys go in once and OAuth2 tokens arrive through the
callback; both are stored encrypted and only the worker decrypts them.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit
from uuid import UUID

from starlette.requests import Request
from starlette.responses import Response

from actions.egress import EgressPolicy
from actions.owner_db import OwnerDbBounds, OwnerDbError, check_connect, target_of
from ingest.api.auth import require_owner
from ingest.api.common import json_response, no_content, page_query, page_response, path_id, read_json
from ingest.api.operations import ID, PAGING, Body, Reply, error, operation, page_of
from ingest.api.validation import check, compile_schema
from ingest.errors import Conflict, Invalid, Unavailable
from ingest.state import AppState, app_state
from oauth.google import DEFAULT_SCOPES, OAuthFlowError, ProviderUnavailable
from oauth.links import link_token
from oauth.providers import API_KEY_PROVIDERS, OAUTH_PROVIDERS, PROVIDERS, secret_shapes_text
from schemas.store import credentials as store
from schemas.store.credentials import Credential
from schemas.store.gmail import mailbox_health

log = logging.getLogger(__name__)

CREATE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["provider", "secret"],
    "additionalProperties": False,
    "properties": {
        "provider": {"enum": API_KEY_PROVIDERS, "description": "OAuth2 providers connect through a connect link."},
        "name": {"type": "string", "minLength": 1, "maxLength": 200},
        "secret": {
            "type": "object",
            "description": "The provider's secret fields: "
            + "; ".join(f"{name}: {secret_shapes_text(PROVIDERS[name])}" for name in API_KEY_PROVIDERS)
            + ".",
            "additionalProperties": {"type": "string", "minLength": 1, "maxLength": 4096},
            "minProperties": 1,
        },
    },
}
LINK_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["provider"],
    "additionalProperties": False,
    "properties": {
        "provider": {"enum": OAUTH_PROVIDERS},
        "scopes": {
            "type": "array",
            "items": {"type": "string", "minLength": 1, "maxLength": 300, "pattern": "^[!#-\\[\\]-~]+$"},
            "maxItems": 30,
        },
        "redirect_after": {"type": "string", "format": "uri", "maxLength": 2000},
    },
}
_CREATE = compile_schema(CREATE_SCHEMA)
_LINK = compile_schema(LINK_SCHEMA)
# Google needs these to tell us which account was connected.
_IDENTITY_SCOPES = ("openid", "email")


def credential_json(row: Credential) -> dict[str, Any]:
    """The API view of a credential: what it is and whether it works, never the secret."""
    return {
        "id": row.id,
        "provider": row.provider,
        "kind": row.kind,
        "name": row.name,
        "account_email": row.account_email,
        "scopes": list(row.scopes),
        "status": row.status,
        "status_reason": row.status_reason,
        "expires_at": row.expires_at,
        "last_refreshed_at": row.last_refreshed_at,
        "created_at": row.created_at,
        "updated_at": row.updated_at,
    }


@operation(
    "POST",
    "/api/credentials",
    f"Store an API-key credential ({', '.join(PROVIDERS[name].title for name in API_KEY_PROVIDERS)})",
    "credentials",
    {201: Reply("Created; the secret is never shown again.", "Credential")},
    body=Body("CredentialCreate"),
)
async def create_credential(request: Request) -> Response:
    """Store an API-key credential for one of the `api_key` providers (oauth/providers.py)."""
    owner_id = await require_owner(request)
    body = await read_json(request)
    check(_CREATE, body)
    provider = PROVIDERS[body["provider"]]
    secret: dict[str, str] = body["secret"]
    if not any(set(secret) == set(shape) for shape in provider.secret_shapes):
        shapes = " or ".join(" + ".join(shape) for shape in provider.secret_shapes)
        raise Invalid(f"secret must have exactly these fields for {provider.name}: {shapes}", field="secret")
    problem = provider.check(secret) if provider.check is not None else None
    if problem is not None:
        # Named by field only: the value is the secret.
        name, message = problem
        raise Invalid(f"secret.{name} {message}", field=f"secret.{name}")
    state = app_state(request)
    if provider.name == "postgres":
        await _check_database(state, secret)
    async with state.pool.acquire() as conn:
        row = await store.insert_api_key(
            conn, state.keyring, owner_id, provider.name, body.get("name", provider.name), secret
        )
    return json_response(credential_json(row), 201)


async def _check_database(state: AppState, secret: dict[str, str]) -> None:
    """A `postgres` credential is stored only once a connection under the egress policy works."""
    policy = EgressPolicy(state.settings.egress_allow, state.settings.egress_deny)
    try:
        await check_connect(target_of(secret), policy, OwnerDbBounds.from_settings(state.settings))
    except OwnerDbError as exc:
        # The message names host, port, user or database, never the password.
        raise Invalid(f"secret.url: cannot use the database: {exc}", field="secret.url") from None


@operation(
    "GET",
    "/api/credentials",
    "List credentials (never secrets)",
    "credentials",
    {200: Reply("OK", page_of("Credential"))},
    params=PAGING,
)
async def list_credentials(request: Request) -> Response:
    """A page of the caller's credentials, newest first."""
    owner_id = await require_owner(request)
    query = page_query(request)
    async with app_state(request).pool.acquire() as conn:
        rows = await store.list_credentials(conn, owner_id, limit=query.limit, after_seq=query.after_seq)
    return page_response(rows, query, credential_json)


@operation(
    "GET",
    "/api/credentials/{id}",
    "Get a credential: provider, account, scopes, status, expiry",
    "credentials",
    {200: Reply("OK", "Credential")},
    params=[ID],
)
async def get_credential(request: Request) -> Response:
    """One credential: provider, account, scopes, status and expiry."""
    owner_id = await require_owner(request)
    credential_id = path_id(request, "credential")
    async with app_state(request).pool.acquire() as conn:
        row = await store.get_credential(conn, owner_id, credential_id)
        mailbox = await mailbox_health(conn, owner_id, credential_id)
    body = credential_json(row)
    if mailbox is not None:
        body["mailbox"] = mailbox
    return json_response(body)


@operation(
    "DELETE",
    "/api/credentials/{id}",
    "Revoke at the provider, then delete",
    "credentials",
    {204: Reply("Deleted.")},
    params=[ID],
    errors={
        409: error("Workflows use the credential (listed); delete them or give them another credential first."),
        503: error("Storage or the provider could not be reached; nothing deleted."),
    },
)
async def delete_credential(request: Request) -> Response:
    """Revoke the credential at its provider (OAuth2), then delete it.

    A credential a live workflow uses (as its action's credential, or as the mailbox its
    trigger reads) is not deleted: 409 lists those workflows, and nothing is revoked, so no
    workflow is left sending with a credential that is gone or reading an unwatched mailbox.
    If the provider cannot be reached the credential is kept and the answer is 503, so the
    owner can retry rather than believe access was withdrawn when it was not.
    """
    owner_id = await require_owner(request)
    credential_id = path_id(request, "credential")
    await delete(app_state(request), owner_id, credential_id)
    return no_content()


async def delete(state: AppState, owner_id: UUID, credential_id: UUID) -> None:
    """Revoke at the provider, then delete one of the owner's credentials (`NotFound`, `Unavailable`)."""
    async with state.pool.acquire() as conn:
        row, secret = await store.load_secret(conn, state.keyring, owner_id, credential_id)
        users = await store.workflows_using(conn, owner_id, credential_id)
        if users:
            named = ", ".join(f"{u.id} ({u.name})" for u in users[:20])
            more = f" and {len(users) - 20} more" if len(users) > 20 else ""
            raise Conflict(
                f"the credential is used by {len(users)} workflow(s): {named}{more}; delete them or give them "
                "another credential first",
                code="credential_in_use",
            )
        # Google revokes the whole grant of an account for this client, so a token is revoked
        # only when no other credential (another owner's, say) uses the same account.
        shared = row.kind == "oauth2" and await store.account_shared(conn, credential_id)
        if row.kind == "oauth2" and row.status != "revoked" and not shared:
            token = secret.get("refresh_token") or secret.get("access_token")
            if token and state.google is not None and state.http is not None:
                try:
                    await state.google.revoke(state.http, str(token))
                except ProviderUnavailable as exc:
                    raise Unavailable(f"could not revoke at {row.provider}: {exc}; try again") from None
                except OAuthFlowError as exc:  # pragma: no cover - revoke maps errors to ProviderUnavailable
                    log.warning("revocation of credential %s failed: %s", credential_id, exc)
        await store.delete_credential(conn, owner_id, credential_id)


def _check_redirect(url: str) -> None:
    problem = "redirect_after must be an https URL (http only for localhost)"
    try:
        parts = urlsplit(url)
        host = parts.hostname
    except ValueError:  # e.g. an unclosed IPv6 bracket
        raise Invalid(problem, field="redirect_after") from None
    local = host in {"localhost", "127.0.0.1", "::1"}
    if not host or (parts.scheme != "https" and not (parts.scheme == "http" and local)):
        raise Invalid(problem, field="redirect_after")


@operation(
    "POST",
    "/api/connect-links",
    "Create a connect link for an OAuth2 provider",
    "credentials",
    {201: Reply("Created.", "ConnectLink")},
    body=Body("ConnectLinkCreate"),
)
async def create_connect_link(request: Request) -> Response:
    """A signed, expiring, single-use URL that connects an account to the caller."""
    owner_id = await require_owner(request)
    body = await read_json(request)
    return json_response(await connect_link(app_state(request), owner_id, body), 201)


async def connect_link(state: AppState, owner_id: UUID, body: dict[str, Any]) -> dict[str, Any]:
    """Validate a link body (`Invalid`) and make a connect link for the owner; its view with the URL."""
    check(_LINK, body)
    if state.google is None:
        raise Invalid("Google OAuth is not configured on this server (HOOKYARD_GOOGLE_CLIENT_ID)", field="provider")
    redirect_after = body.get("redirect_after")
    if redirect_after is not None:
        _check_redirect(redirect_after)
    requested = body.get("scopes") or list(DEFAULT_SCOPES)
    scopes = sorted(set(requested) | set(_IDENTITY_SCOPES))
    expires_at = datetime.now(UTC) + timedelta(seconds=state.settings.connect_link_ttl_s)
    async with state.pool.acquire() as conn:
        link = await store.insert_connect_link(conn, owner_id, body["provider"], scopes, redirect_after, expires_at)
    url = f"{state.settings.base_url}/oauth/connect/{link_token(state.keyring, link.id)}"
    return {
        "id": link.id,
        "provider": link.provider,
        "scopes": scopes,
        "url": url,
        "expires_at": link.expires_at,
        "redirect_after": redirect_after,
    }
