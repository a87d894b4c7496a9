"""Subscriptions: where an owner's notifications are delivered, and the delivery log.

Each subscription is backed by an internal workflow (trigger `hookyard.notification`, action
`hookyard.deliver`, concurrency 1) whose executions are its deliveries; `notifications.emit`
queues them. Secrets are encrypted like endpoint secrets, several valid during a rotation.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

import asyncpg

from schemas.errors import NotFound
from schemas.sealed import Cipher, record_aad
from schemas.store.rows import row_of, rows_of
from schemas.store.workflows import DEFAULT_LANES, cancel_pending

NOTIFICATION_TRIGGER = "hookyard.notification"
DELIVER_ACTION = "hookyard.deliver"

# Attempts of one delivery at most, whatever the schedule (bounds a misconfigured one).
MAX_DELIVERY_ATTEMPTS = 100


def delivery_retry_policy(delays_s: Sequence[float], max_age_s: float) -> dict[str, Any]:
    """The retry policy of deliveries: the waits between attempts (the last repeating; by default
    5 s, 5 min, 30 min, 2 h, 5 h, 10 h; a target's Retry-After wins when longer), as many
    attempts as fit in `max_age_s`."""
    delays = [max(0.1, float(d)) for d in delays_s] or [5.0]
    attempts, waited = 1, 0.0
    while attempts < MAX_DELIVERY_ATTEMPTS and waited + delays[min(attempts, len(delays)) - 1] <= max_age_s:
        waited += delays[min(attempts, len(delays)) - 1]
        attempts += 1
    return {"delays_s": delays, "max_attempts": attempts}


GONE_REASON = "the target answered 410 Gone"


# Live subscriptions one owner may have: each notification is queued once per matching one, so
# this bounds what one state change can fan out to.
MAX_SUBSCRIPTIONS_PER_OWNER = 50


class TooManySubscriptions(Exception):
    """The owner already has MAX_SUBSCRIPTIONS_PER_OWNER live subscriptions."""


class DeliveryNotFinished(Exception):
    """A delivery can be sent again only once it has finished."""


@dataclass(frozen=True, slots=True)
class Subscription:
    """A subscription as its owner may see it (never its secrets)."""

    id: UUID
    seq: int
    target_url: str
    event_types: list[str]
    workflow_ids: list[UUID] | None
    action_types: list[str] | None
    active: bool
    status: str
    status_reason: str | None
    failing_since: datetime | None
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class Delivery:
    """One delivery of a notification to a subscription (an execution of its workflow)."""

    id: UUID
    seq: int
    notification_id: str | None
    notification_type: str | None
    status: str
    attempts: int
    response_status: int | None
    error: str | None
    created_at: datetime
    finished_at: datetime | None
    next_attempt_at: datetime | None
    replay_of: UUID | None


_COLUMNS = (
    "id, seq, target_url, event_types, workflow_ids, action_types, active, status, status_reason, "
    "failing_since, created_at, updated_at"
)


def _aad(owner_id: UUID, secret_id: UUID) -> bytes:
    return record_aad("subscription_secrets", str(owner_id), str(secret_id), "ciphertext")


async def _add_secret(conn: asyncpg.Connection, cipher: Cipher, owner_id: UUID, sub_id: UUID, secret: str) -> None:
    secret_id: UUID = await conn.fetchval("SELECT gen_random_uuid()")
    await conn.execute(
        "INSERT INTO subscription_secrets (id, subscription_id, ciphertext) VALUES ($1, $2, $3)",
        secret_id,
        sub_id,
        cipher.encrypt(secret.encode(), _aad(owner_id, secret_id)),
    )


def _deliver_config(sub_id: UUID, values: Mapping[str, Any]) -> dict[str, Any]:
    return {"subscription_id": str(sub_id), "target_url": values["target_url"], "base_url": values["base_url"]}


async def create_subscription(
    conn: asyncpg.Connection,
    cipher: Cipher,
    owner_id: UUID,
    values: Mapping[str, Any],
    secret: str,
    lanes: int = DEFAULT_LANES,
) -> Subscription:
    """Create a subscription, its internal delivery workflow and its first secret, in one transaction.

    `values`: target_url, event_types, workflow_ids, action_types, active, base_url (what
    relative links in notifications are resolved against), disable_after_s, retry_policy
    (`delivery_retry_policy`).
    """
    async with conn.transaction():
        await _check_room(conn, owner_id)
        sub_id: UUID = await conn.fetchval("SELECT gen_random_uuid()")
        workflow_id = await conn.fetchval(
            "INSERT INTO workflows (owner_id, name, trigger_type, trigger_config, routing_key, action_type, "
            "action_config, active, concurrency_limit, retry_policy, internal, lane) "
            "SELECT $1, $2, $3, '{}', $4, $5, $6, $7, 1, $8, true, mod(abs(hashtext(i.id::text)::bigint), $9) "
            "FROM (SELECT gen_random_uuid() AS id) i RETURNING id",
            owner_id,
            f"subscription {sub_id}",
            NOTIFICATION_TRIGGER,
            str(sub_id),
            DELIVER_ACTION,
            _deliver_config(sub_id, values),
            values["active"],
            values["retry_policy"],
            lanes if lanes > 0 else DEFAULT_LANES,
        )
        row = await conn.fetchrow(
            "INSERT INTO subscriptions (id, owner_id, workflow_id, target_url, event_types, workflow_ids, "
            "action_types, active, status, disable_after_s) "
            "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, CASE WHEN $8 THEN 'healthy' ELSE 'disabled' END, $9) "
            f"RETURNING {_COLUMNS}",
            sub_id,
            owner_id,
            workflow_id,
            values["target_url"],
            list(values["event_types"]),
            values["workflow_ids"],
            values["action_types"],
            values["active"],
            int(values["disable_after_s"]),
        )
        await _add_secret(conn, cipher, owner_id, sub_id, secret)
    return row_of(Subscription, row)


async def _check_room(conn: asyncpg.Connection, owner_id: UUID) -> None:
    # The owner row lock serialises concurrent creates, so the cap holds under races.
    await conn.execute("SELECT 1 FROM owners WHERE id = $1 FOR UPDATE", owner_id)
    live = await conn.fetchval(
        "SELECT count(*) FROM subscriptions WHERE owner_id = $1 AND deleted_at IS NULL", owner_id
    )
    if live >= MAX_SUBSCRIPTIONS_PER_OWNER:
        raise TooManySubscriptions(
            f"an owner may have at most {MAX_SUBSCRIPTIONS_PER_OWNER} subscriptions; delete one first"
        )


async def list_subscriptions(
    conn: asyncpg.Connection, owner_id: UUID, *, limit: int, after_seq: int | None = None
) -> list[Subscription]:
    """A page of the owner's subscriptions, newest first (limit+1 rows)."""
    rows = await conn.fetch(
        f"SELECT {_COLUMNS} FROM subscriptions WHERE owner_id = $1 AND deleted_at IS NULL "
        "AND ($2::bigint IS NULL OR seq < $2) ORDER BY seq DESC LIMIT $3",
        owner_id,
        after_seq,
        limit + 1,
    )
    return rows_of(Subscription, rows)


async def get_subscription(conn: asyncpg.Connection, owner_id: UUID, sub_id: UUID) -> Subscription:
    """One of the owner's subscriptions; `NotFound` otherwise."""
    row = await conn.fetchrow(
        f"SELECT {_COLUMNS} FROM subscriptions WHERE id = $1 AND owner_id = $2 AND deleted_at IS NULL",
        sub_id,
        owner_id,
    )
    if row is None:
        raise NotFound("subscription")
    return row_of(Subscription, row)


async def update_subscription(
    conn: asyncpg.Connection, owner_id: UUID, sub_id: UUID, values: Mapping[str, Any]
) -> Subscription:
    """Replace target, event types, filters and active flag (the caller merged the patch).

    Activating clears a failing or disabled status; deactivating cancels deliveries not yet sent.
    """
    async with conn.transaction():
        row = await conn.fetchrow(
            "UPDATE subscriptions SET target_url = $3, event_types = $4, workflow_ids = $5, action_types = $6, "
            "active = $7, updated_at = now(), "
            "status = CASE WHEN NOT $7 THEN 'disabled' WHEN active THEN status ELSE 'healthy' END, "
            "status_reason = CASE WHEN NOT $7 THEN 'deactivated by its owner' WHEN active THEN status_reason END, "
            "failing_since = CASE WHEN $7 AND active THEN failing_since END "
            f"WHERE id = $1 AND owner_id = $2 AND deleted_at IS NULL RETURNING {_COLUMNS}, workflow_id",
            sub_id,
            owner_id,
            values["target_url"],
            list(values["event_types"]),
            values["workflow_ids"],
            values["action_types"],
            values["active"],
        )
        if row is None:
            raise NotFound("subscription")
        await conn.execute(
            "UPDATE workflows SET action_config = $2, active = $3, updated_at = now() WHERE id = $1",
            row["workflow_id"],
            _deliver_config(sub_id, values),
            values["active"],
        )
        if not values["active"]:
            await cancel_pending(conn, row["workflow_id"])
    return row_of(Subscription, {k: v for k, v in row.items() if k != "workflow_id"})


async def delete_subscription(conn: asyncpg.Connection, owner_id: UUID, sub_id: UUID) -> None:
    """Delete a subscription: deliveries not yet sent are cancelled, its secrets dropped."""
    async with conn.transaction():
        workflow_id = await conn.fetchval(
            "UPDATE subscriptions SET deleted_at = now(), active = false WHERE id = $1 AND owner_id = $2 "
            "AND deleted_at IS NULL RETURNING workflow_id",
            sub_id,
            owner_id,
        )
        if workflow_id is None:
            raise NotFound("subscription")
        await conn.execute("DELETE FROM subscription_secrets WHERE subscription_id = $1", sub_id)
        await conn.execute(
            "UPDATE workflows SET active = false, deleted_at = now() WHERE id = $1 AND internal", workflow_id
        )
        await cancel_pending(conn, workflow_id)


async def rotate_secret(
    conn: asyncpg.Connection, cipher: Cipher, owner_id: UUID, sub_id: UUID, secret: str, grace_s: int
) -> None:
    """Add a new current secret; the ones valid so far keep signing for `grace_s` seconds."""
    async with conn.transaction():
        found = await conn.fetchval(
            "SELECT 1 FROM subscriptions WHERE id = $1 AND owner_id = $2 AND deleted_at IS NULL FOR UPDATE",
            sub_id,
            owner_id,
        )
        if not found:
            raise NotFound("subscription")
        await conn.execute(
            "UPDATE subscription_secrets SET expires_at = LEAST(coalesce(expires_at, 'infinity'), "
            "now() + make_interval(secs => $2)) WHERE subscription_id = $1",
            sub_id,
            float(grace_s),
        )
        await _add_secret(conn, cipher, owner_id, sub_id, secret)


def open_secret(cipher: Cipher, owner_id: UUID, secret_id: UUID, ciphertext: str) -> str:
    """A subscription secret decrypted (`load_signing_secret` reads the rows with the workflow's)."""
    return cipher.decrypt(ciphertext, _aad(owner_id, secret_id)).decode()


_DELIVERY_COLUMNS = (
    "x.id, x.seq, x.trigger_data->>'id' AS notification_id, x.trigger_data->>'type' AS notification_type, "
    "x.status, x.attempts, (CASE WHEN jsonb_typeof(x.result->'status_code') = 'number' "
    "THEN (x.result->>'status_code')::int END) AS response_status, x.error, x.created_at, x.finished_at, "
    "x.next_attempt_at, x.replay_of"
)


async def list_deliveries(
    conn: asyncpg.Connection, owner_id: UUID, sub_id: UUID, *, limit: int, after_seq: int | None = None
) -> list[Delivery]:
    """A page of a subscription's deliveries, newest first (limit+1 rows); `NotFound` if not the owner's."""
    workflow_id = await _workflow_of(conn, owner_id, sub_id)
    rows = await conn.fetch(
        f"SELECT {_DELIVERY_COLUMNS} FROM executions x WHERE x.workflow_id = $1 AND x.owner_id = $2 "
        "AND ($3::bigint IS NULL OR x.seq < $3) ORDER BY x.seq DESC LIMIT $4",
        workflow_id,
        owner_id,
        after_seq,
        limit + 1,
    )
    return rows_of(Delivery, rows)


async def retry_delivery(conn: asyncpg.Connection, owner_id: UUID, sub_id: UUID, delivery_id: UUID) -> Delivery:
    """Queue a finished delivery again (same notification, so the same `webhook-id`).

    `NotFound` unless it is a delivery of this owner's subscription; `DeliveryNotFinished` while
    it is queued or running, or while the subscription is inactive.
    """
    async with conn.transaction():
        workflow_id = await _workflow_of(conn, owner_id, sub_id)
        status = await conn.fetchval(
            "SELECT status FROM executions WHERE id = $1 AND workflow_id = $2 AND owner_id = $3 FOR UPDATE",
            delivery_id,
            workflow_id,
            owner_id,
        )
        if status is None:
            raise NotFound("delivery")
        if status in ("queued", "running"):
            raise DeliveryNotFinished(f"the delivery has not finished ({status})")
        if not await conn.fetchval("SELECT active FROM subscriptions WHERE id = $1", sub_id):
            raise DeliveryNotFinished("the subscription is not active; activate it first")
        row = await conn.fetchrow(
            "INSERT INTO executions AS x (owner_id, workflow_id, replay_of, trigger_data) "
            "SELECT owner_id, workflow_id, id, trigger_data FROM executions WHERE id = $1 "
            f"RETURNING {_DELIVERY_COLUMNS}",
            delivery_id,
        )
        await conn.execute("SELECT pg_notify('hookyard_events', '')")
    return row_of(Delivery, row)


async def _workflow_of(conn: asyncpg.Connection, owner_id: UUID, sub_id: UUID) -> UUID:
    workflow_id: UUID | None = await conn.fetchval(
        "SELECT workflow_id FROM subscriptions WHERE id = $1 AND owner_id = $2 AND deleted_at IS NULL",
        sub_id,
        owner_id,
    )
    if workflow_id is None:
        raise NotFound("subscription")
    return workflow_id


async def record_delivery_outcomes(conn: asyncpg.Connection, rows: Sequence[asyncpg.Record]) -> None:
    """Keep each subscription's health from its deliveries' attempt outcomes (rows: workflow_id,
    status, error, gone), in the transaction that records them.

    A success makes it healthy; a failed attempt makes it failing (since the first such); a
    410 Gone, or failing for longer than its `disable_after_s`, disables it with the reason,
    cancelling the deliveries not yet sent.
    """
    if not rows:
        return
    await conn.execute(
        "UPDATE subscriptions s SET status = 'healthy', status_reason = NULL, failing_since = NULL "
        "WHERE s.workflow_id = ANY($1::uuid[]) AND s.status = 'failing'",
        [r["workflow_id"] for r in rows if r["status"] == "succeeded"],
    )
    failed = [r for r in rows if r["status"] != "succeeded" and r["error"] is not None]
    await conn.execute(
        "UPDATE subscriptions s SET status = 'failing', status_reason = u.error, "
        "failing_since = coalesce(s.failing_since, now()) FROM unnest($1::uuid[], $2::text[]) AS u(wf, error) "
        "WHERE s.workflow_id = u.wf AND s.status IN ('healthy', 'failing') AND s.active",
        [r["workflow_id"] for r in failed],
        [str(r["error"])[:500] for r in failed],
    )
    disabled = await conn.fetch(
        "UPDATE subscriptions s SET active = false, status = 'disabled', updated_at = now(), "
        "status_reason = CASE WHEN u.gone THEN $3 ELSE 'deliveries failed for longer than ' "
        "|| s.disable_after_s || ' s; last error: ' || coalesce(s.status_reason, '') END "
        "FROM unnest($1::uuid[], $2::bool[]) AS u(wf, gone) WHERE s.workflow_id = u.wf AND s.active "
        "AND (u.gone OR s.failing_since < now() - make_interval(secs => s.disable_after_s)) RETURNING s.workflow_id",
        [r["workflow_id"] for r in failed],
        [bool(r["gone"]) for r in failed],
        GONE_REASON,
    )
    for row in disabled:
        await conn.execute("UPDATE workflows SET active = false WHERE id = $1 AND internal", row["workflow_id"])
        await cancel_pending(conn, row["workflow_id"])
