"""`POST /ingest/ticks/{trigger_id}`: a tick from an outside scheduler, for a `schedule.tick` workflow.

The same durable path as `/hooks`: authenticate, deduplicate, store with the group commit,
answer `202 {"event_id"}` (a duplicate `200 {"duplicate": true}`); the dispatcher does the
rest. `trigger_id` is the workflow's id. Unknown workflow 404, bad signature or token 401,
unreadable scheduled time 400: nothing is stored. See `triggers/tick.py` for the auth modes
and the dedup rules.
"""

from __future__ import annotations

import time
import uuid
from typing import Any
from uuid import UUID

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from ingest.errors import BadRequest, NotFound, Unauthorized, Unavailable
from ingest.hooks import kept_headers, read_body, storable_id
from ingest.oidc import OidcError, OidcUnavailable, OidcVerifier
from ingest.signatures import SignatureError, get_scheme
from ingest.state import AppState, app_state
from schemas.store.events import NewEvent
from schemas.store.trigger_sync import trigger_of
from triggers import tick


async def receive_tick(request: Request) -> Response:
    """Accept one tick."""
    state = app_state(request)
    try:
        workflow_id = UUID(request.path_params["trigger_id"])
    except ValueError:
        raise NotFound("no such tick trigger") from None
    body = await read_body(request, state.settings.max_body_bytes, state.settings.body_read_timeout_s)
    async with state.pool.acquire(timeout=10) as conn:
        workflow = await trigger_of(conn, workflow_id)
    if workflow is None or workflow["trigger_type"] != tick.NAME:
        raise NotFound("no such tick trigger")
    headers = dict(request.headers)
    config = workflow["trigger_config"]
    if config["auth"] == "hmac":
        verification, delivery_id = await _verify_hmac(state, workflow["owner_id"], config, headers, body)
    else:
        verification = await _verify_oidc(state, config, headers)
        delivery_id = None
    try:
        # With HMAC only signed data may name the time; a bearer token vouches for the request.
        scheduled_at = tick.scheduled_time(
            headers, body, trust_headers=config["auth"] != "hmac", max_depth=state.settings.max_json_depth
        )
    except tick.BadScheduledTime as exc:
        raise BadRequest(str(exc)) from None
    if scheduled_at:
        dedup_key = f"scheduled:{scheduled_at}"
    elif delivery_id:
        dedup_key = f"id:{delivery_id}"
    else:
        dedup_key = f"request:{uuid.uuid4()}"
    stored = await state.inbox.store(
        NewEvent(
            owner_id=workflow["owner_id"],
            source_type=tick.SOURCE_TYPE,
            source_id=str(workflow_id),
            dedup_key=dedup_key[:500],
            headers=kept_headers(headers),
            body=body,
            verification=verification | {"scheduled_at": scheduled_at, "delivery_id": delivery_id},
        )
    )
    return JSONResponse(
        {"event_id": str(stored.event_id), "duplicate": stored.duplicate},
        status_code=200 if stored.duplicate else 202,
    )


async def _verify_hmac(
    state: AppState, owner_id: UUID, config: dict[str, Any], headers: dict[str, str], body: bytes
) -> tuple[dict[str, Any], str | None]:
    auth = await state.endpoints.get(UUID(config["endpoint_id"]))
    # The endpoint was the owner's when the workflow was saved; it may have been deleted since.
    if auth is None or auth.owner_id != owner_id:
        raise Unauthorized(
            "the endpoint whose secret verifies these ticks no longer exists", code="signature_no_secret"
        )
    scheme = get_scheme(auth.scheme)
    try:
        verified = scheme.verify(body, headers, auth.secrets, time.time(), state.settings.signature_tolerance_s)
    except SignatureError as exc:
        raise Unauthorized(str(exc), code=f"signature_{exc.reason}") from None
    verification = {
        "verified": True,
        "auth": "hmac",
        "scheme": auth.scheme,
        "endpoint_id": str(auth.endpoint_id),
        "secret": "current" if verified.secret_index == 0 else "previous",
        "signed_at": verified.timestamp,
    }
    return verification, storable_id(scheme.delivery_id(body, headers))


async def _verify_oidc(state: AppState, config: dict[str, Any], headers: dict[str, str]) -> dict[str, Any]:
    verifier = _oidc_verifier(state)
    try:
        claims = await verifier.verify(
            headers.get("authorization"), audience=config["audience"], emails=[config["service_account"]]
        )
    except OidcError as exc:
        raise Unauthorized(f"OIDC token rejected: {exc.reason}", code=f"oidc_{exc.reason.replace(' ', '_')}") from None
    except OidcUnavailable:
        raise Unavailable("cannot check OIDC tokens right now; retry later") from None
    return {"verified": True, "auth": "oidc", "email": claims.get("email"), "issued_at": claims.get("iat")}


def _oidc_verifier(state: AppState) -> OidcVerifier:
    """The process's verifier, whose key cache every request shares."""
    if state.oidc is None:
        raise Unavailable("OIDC verification is not set up in this process")
    return state.oidc
