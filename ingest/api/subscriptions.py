"""`/api/subscriptions`: where an owner's notifications are delivered, and the delivery log."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

import httpx
from starlette.requests import Request
from starlette.responses import Response

from actions.egress import EgressPolicy
from actions.errors import ActionError
from ingest.api.auth import require_owner
from ingest.api.common import json_response, no_content, page_query, page_response, path_id, read_json
from ingest.api.operations import ID, PAGING, UUID_SCHEMA, Body, Param, Reply, error, operation, page_of
from ingest.api.validation import check, compile_schema
from ingest.errors import Conflict, Invalid
from ingest.signatures import generate_secret
from ingest.state import AppState, app_state
from schemas.notification_types import EVENT_TYPES
from schemas.store import subscriptions as store
from schemas.store.subscriptions import Delivery, Subscription

# Resolving a target's host at save time may take this long (then 422).
RESOLVE_TIMEOUT_S = 3.0

_TARGET = {
    "type": "string",
    "minLength": 1,
    "maxLength": 2048,
    "description": "http(s) URL notifications are POSTed to; the egress policy of `http.request` applies.",
}
_EVENT_TYPES = {
    "type": "array",
    "minItems": 1,
    "maxItems": 64,
    "uniqueItems": True,
    "items": {"enum": sorted(EVENT_TYPES)},
    "description": "The notification event types wanted (see `notification_types` in /api/catalog).",
}
_FILTERS = {
    "type": "object",
    "additionalProperties": False,
    "description": "Only notifications about these workflows / action types (omitted or null: all).",
    "properties": {
        "workflow_ids": {"type": ["array", "null"], "maxItems": 100, "uniqueItems": True, "items": UUID_SCHEMA},
        "action_types": {
            "type": ["array", "null"],
            "maxItems": 64,
            "uniqueItems": True,
            "items": {"type": "string", "minLength": 1, "maxLength": 100},
        },
    },
}
_PROPERTIES = {
    "target_url": _TARGET,
    "event_types": _EVENT_TYPES,
    "filters": _FILTERS,
    "active": {"type": "boolean", "default": True},
}
CREATE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["target_url", "event_types"],
    "properties": _PROPERTIES,
}
PATCH_SCHEMA: dict[str, Any] = {"type": "object", "additionalProperties": False, "properties": _PROPERTIES}
_CREATE = compile_schema(CREATE_SCHEMA)
_PATCH = compile_schema(PATCH_SCHEMA)


def subscription_json(row: Subscription) -> dict[str, Any]:
    """The API view of a subscription (never a secret)."""
    return {
        "id": str(row.id),
        "target_url": row.target_url,
        "event_types": row.event_types,
        "filters": {
            "workflow_ids": None if row.workflow_ids is None else [str(w) for w in row.workflow_ids],
            "action_types": row.action_types,
        },
        "active": row.active,
        "status": row.status,
        "status_reason": row.status_reason,
        "failing_since": None if row.failing_since is None else row.failing_since.isoformat(),
        "created_at": row.created_at.isoformat(),
        "updated_at": row.updated_at.isoformat(),
    }


def delivery_json(row: Delivery) -> dict[str, Any]:
    """The API view of one delivery."""

    def when(value: datetime | None) -> str | None:
        return None if value is None else value.isoformat()

    return {
        "id": str(row.id),
        "notification": {"id": row.notification_id, "type": row.notification_type},
        "status": row.status,
        "attempts": row.attempts,
        "response_status": row.response_status,
        "error": row.error,
        "created_at": row.created_at.isoformat(),
        "finished_at": when(row.finished_at),
        "next_attempt_at": when(row.next_attempt_at),
        "replay_of": None if row.replay_of is None else str(row.replay_of),
    }


async def check_target(policy: EgressPolicy, url: str) -> None:
    """An http(s) URL whose host the egress policy lets actions reach; `Invalid` naming why not."""
    try:
        parsed = httpx.URL(url)
        scheme, host, port, userinfo = parsed.scheme, parsed.host, parsed.port, parsed.userinfo
        normalised = str(parsed)
    except (httpx.InvalidURL, ValueError):  # UnicodeError (IDNA) is a ValueError
        raise Invalid("target_url is not a valid URL", field="target_url") from None
    if scheme not in ("http", "https") or not host:
        raise Invalid("target_url must be an http or https URL with a host", field="target_url")
    if port is not None and not 0 < port < 65536:
        raise Invalid("target_url has a port outside 1-65535", field="target_url")
    if userinfo:
        raise Invalid("target_url must not carry a user name or password", field="target_url")
    try:
        await policy.check_url(normalised, RESOLVE_TIMEOUT_S)
    except ActionError as exc:  # refused by the policy, or the host does not resolve
        raise Invalid(f"target_url: {exc}", field="target_url") from None
    except (OSError, ValueError):
        raise Invalid("target_url: the host cannot be resolved", field="target_url") from None


def _values(state: AppState, body: dict[str, Any], current: Subscription | None = None) -> dict[str, Any]:
    """The stored values: the body over the current subscription's."""
    filters = body.get("filters") or {}
    if current is not None and "filters" not in body:
        filters = {"workflow_ids": current.workflow_ids, "action_types": current.action_types}
    workflow_ids = filters.get("workflow_ids")
    return {
        "target_url": body.get("target_url", current.target_url if current else None),
        "event_types": body.get("event_types", current.event_types if current else None),
        "workflow_ids": None if workflow_ids is None else [UUID(str(w)) for w in workflow_ids],
        "action_types": filters.get("action_types"),
        "active": body.get("active", current.active if current else True),
        "base_url": state.settings.base_url,
    }


def _policy(state: AppState) -> EgressPolicy:
    return EgressPolicy(state.settings.egress_allow, state.settings.egress_deny)


@operation(
    "POST",
    "/api/subscriptions",
    "Subscribe to notifications (the signing secret is shown once)",
    "subscriptions",
    {201: Reply("Created.", "SubscriptionCreated")},
    body=Body("SubscriptionCreate"),
    errors={409: error(f"The owner already has {store.MAX_SUBSCRIPTIONS_PER_OWNER} subscriptions.")},
)
async def create_subscription(request: Request) -> Response:
    """Create a subscription; its `whsec_` signing secret is in this response only."""
    owner_id = await require_owner(request)
    body = await read_json(request)
    state = app_state(request)
    check(_CREATE, body)
    values = _values(state, body)
    await check_target(_policy(state), values["target_url"])
    settings = state.settings
    values["disable_after_s"] = settings.subscription_disable_after_s
    values["retry_policy"] = store.delivery_retry_policy(
        settings.subscription_retry_delays_s, settings.subscription_max_age_s
    )
    secret = generate_secret()
    async with state.pool.acquire() as conn:
        try:
            row = await store.create_subscription(conn, state.keyring, owner_id, values, secret, settings.lanes)
        except store.TooManySubscriptions as exc:
            raise Conflict(str(exc)) from None
    return json_response({**subscription_json(row), "secret": secret}, 201)


@operation(
    "GET",
    "/api/subscriptions",
    "List subscriptions",
    "subscriptions",
    {200: Reply("OK", page_of("Subscription"))},
    params=PAGING,
)
async def list_subscriptions(request: Request) -> Response:
    """A page of the caller's subscriptions, newest first."""
    owner_id = await require_owner(request)
    query = page_query(request)
    async with app_state(request).pool.acquire() as conn:
        rows = await store.list_subscriptions(conn, owner_id, limit=query.limit, after_seq=query.after_seq)
    return page_response(rows, query, subscription_json)


@operation(
    "GET",
    "/api/subscriptions/{id}",
    "Get a subscription",
    "subscriptions",
    {200: Reply("OK", "Subscription")},
    params=[ID],
)
async def get_subscription(request: Request) -> Response:
    """One subscription, with how its deliveries fare (`status`, `status_reason`)."""
    owner_id = await require_owner(request)
    sub_id = path_id(request, "subscription")
    async with app_state(request).pool.acquire() as conn:
        row = await store.get_subscription(conn, owner_id, sub_id)
    return json_response(subscription_json(row))


@operation(
    "PATCH",
    "/api/subscriptions/{id}",
    "Change a subscription's target, event types, filters or active flag",
    "subscriptions",
    {200: Reply("OK", "Subscription")},
    params=[ID],
    body=Body("SubscriptionPatch"),
)
async def update_subscription(request: Request) -> Response:
    """Apply a patch; activating clears a failing or disabled status, deactivating cancels
    deliveries not yet sent."""
    owner_id = await require_owner(request)
    sub_id = path_id(request, "subscription")
    body = await read_json(request)
    state = app_state(request)
    check(_PATCH, body)
    async with state.pool.acquire() as conn:
        current = await store.get_subscription(conn, owner_id, sub_id)
    values = _values(state, body, current)
    if "target_url" in body:
        await check_target(_policy(state), values["target_url"])
    async with state.pool.acquire() as conn:
        row = await store.update_subscription(conn, owner_id, sub_id, values)
    return json_response(subscription_json(row))


@operation(
    "DELETE",
    "/api/subscriptions/{id}",
    "Delete a subscription",
    "subscriptions",
    {204: Reply("Deleted.")},
    params=[ID],
)
async def delete_subscription(request: Request) -> Response:
    """Delete a subscription; deliveries not yet sent are cancelled."""
    owner_id = await require_owner(request)
    sub_id = path_id(request, "subscription")
    async with app_state(request).pool.acquire() as conn:
        await store.delete_subscription(conn, owner_id, sub_id)
    return no_content()


@operation(
    "POST",
    "/api/subscriptions/{id}/rotate-secret",
    "Rotate the signing secret; the previous one keeps signing for a grace period",
    "subscriptions",
    {200: Reply("OK", "SecretRotated")},
    params=[ID],
)
async def rotate_secret(request: Request) -> Response:
    """Make a new signing secret; deliveries carry a signature by each valid secret meanwhile."""
    owner_id = await require_owner(request)
    sub_id = path_id(request, "subscription")
    state = app_state(request)
    grace_s = state.settings.secret_rotation_grace_s
    secret = generate_secret()
    async with state.pool.acquire() as conn:
        await store.rotate_secret(conn, state.keyring, owner_id, sub_id, secret, grace_s)
    valid_until = datetime.now(UTC) + timedelta(seconds=grace_s)
    return json_response({"secret": secret, "previous_valid_until": valid_until.isoformat()})


DELIVERY_ID = Param("delivery_id", UUID_SCHEMA, where="path")


@operation(
    "GET",
    "/api/subscriptions/{id}/deliveries",
    "List a subscription's deliveries",
    "subscriptions",
    {200: Reply("OK", page_of("Delivery"))},
    params=[ID, *PAGING],
)
async def list_deliveries(request: Request) -> Response:
    """A page of the subscription's deliveries, newest first."""
    owner_id = await require_owner(request)
    sub_id = path_id(request, "subscription")
    query = page_query(request)
    async with app_state(request).pool.acquire() as conn:
        rows = await store.list_deliveries(conn, owner_id, sub_id, limit=query.limit, after_seq=query.after_seq)
    return page_response(rows, query, delivery_json)


@operation(
    "POST",
    "/api/subscriptions/{id}/deliveries/{delivery_id}/retry",
    "Send a finished delivery again (same notification, same webhook-id)",
    "subscriptions",
    {202: Reply("Queued.", "Delivery")},
    params=[ID, DELIVERY_ID],
    errors={409: error("The delivery has not finished yet, or the subscription is inactive.")},
)
async def retry_delivery(request: Request) -> Response:
    """Queue a new delivery of the same notification; 409 while the original is unfinished."""
    owner_id = await require_owner(request)
    sub_id = path_id(request, "subscription")
    delivery_id = path_id(request, "delivery", "delivery_id")
    async with app_state(request).pool.acquire() as conn:
        try:
            row = await store.retry_delivery(conn, owner_id, sub_id, delivery_id)
        except store.DeliveryNotFinished as exc:
            raise Conflict(str(exc)) from None
    return json_response(delivery_json(row), 202)


OPERATIONS = (
    list_subscriptions,
    create_subscription,
    get_subscription,
    update_subscription,
    delete_subscription,
    rotate_secret,
    list_deliveries,
    retry_delivery,
)
