"""Owner notifications other than `execution.*`: each built and emitted in the transaction of
the state change it reports (newsletters, credentials, trigger sync, Gmail watches).

Throttles are rows' columns written in the same transaction as the notification, so a
notification is sent once per throttle window or failure episode however many processes
race, and a rolled-back change leaves neither behind. Nothing is built unless the owner has an
active subscription to the type (one indexed probe), so owners without subscriptions pay only
that probe, and only at these (rare) transitions. A notification that cannot be written for a
reason other than storage (a defect) is logged and dropped inside a savepoint, never undoing or
blocking the change it reports; storage errors fail the transaction, to be retried with it.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any, TypeVar
from uuid import UUID

import asyncpg

from schemas.db import in_savepoint
from schemas.notification_types import (
    CREDENTIAL_NEEDS_RECONNECT,
    GMAIL_WATCH_EXPIRING,
    GMAIL_WATCH_RENEWED_FAILED,
    NEWSLETTER_COMPLETED,
    NEWSLETTER_PROGRESS,
    TRIGGER_SYNC_FAILED,
)
from schemas.sanitize import strip_nul
from schemas.store.notifications import Notice, emit, emit_many

log = logging.getLogger(__name__)

T = TypeVar("T")

# newsletter.progress: at most one per newsletter per this many seconds (the first one this
# long after sending started, so a short newsletter reports only its completion).
PROGRESS_INTERVAL_S = 10.0

# gmail.watch_expiring: a watch with less than this left (watches last 7 days and are renewed
# daily, so renewals have been failing for two days; the `expiring` state of its health).
WATCH_EXPIRING_WITHIN = timedelta(days=5)

# Identity scopes every connect link asks for, so the callback learns which account it is.
IDENTITY_SCOPES = ("openid", "email")

_MAX_ERROR = 500

# Whether owner `{owner}` (a column or parameter) has an active subscription to type `{kind}` (a
# parameter): usable inside other statements.
SUBSCRIBES = (
    "EXISTS (SELECT 1 FROM subscriptions s WHERE s.owner_id = {owner} AND s.active AND s.deleted_at IS NULL "
    "AND {kind} = ANY(s.event_types))"
)


async def subscribes(conn: asyncpg.Connection, owner_id: UUID, event_type: str) -> bool:
    """Whether the owner has an active subscription to `event_type`."""
    wanted: bool = await conn.fetchval(f"SELECT {SUBSCRIBES.format(owner='$1', kind='$2')}", owner_id, event_type)
    return wanted


async def _isolated(conn: asyncpg.Connection, what: str, write: Callable[[], Awaitable[T]], default: T) -> T:
    """Run `write` in a savepoint (a transaction when none is open): a defect drops the notification only."""
    return await in_savepoint(conn, write, default, f"a {what} notification")


def _clip(text: str) -> str:
    """An error as notifications carry it: storable (providers' messages may hold NUL) and bounded."""
    clipped: str = strip_nul(text[:_MAX_ERROR])
    return clipped


def _workflow(row: Mapping[str, Any]) -> dict[str, Any]:
    return {"id": str(row["workflow_id"]), "name": row["workflow_name"]}


# --- newsletters -----------------------------------------------------------------------------

# Appended to the statement recording a recipient (`n`: newsletters, `x`: executions): whether
# a newsletter.progress may be due, so the slot is claimed only then.
PROGRESS_DUE = (
    f"coalesce(n.progress_notified_at, n.started_at) <= now() - make_interval(secs => {PROGRESS_INTERVAL_S}) "
    f"AND {SUBSCRIBES.format(owner='x.owner_id', kind=repr(NEWSLETTER_PROGRESS.name))}"
)

_COUNTS = (
    "SELECT count(*) FILTER (WHERE state = 'sent') AS sent, count(*) FILTER (WHERE state = 'failed') AS failed, "
    "count(*) FILTER (WHERE state = 'unknown') AS unknown, count(*) FILTER (WHERE state = 'cancelled') AS cancelled, "
    "count(*) FILTER (WHERE state IN ('pending', 'sending')) AS remaining "
    "FROM newsletter_recipients WHERE execution_id = $1"
)


def newsletter_counts(execution_id: UUID, total: int, counts: Mapping[str, int]) -> dict[str, Any]:
    """The counts of a newsletter as notifications carry them (`failed` includes `unknown`)."""
    return {
        "execution_id": str(execution_id),
        "total": total,
        "sent": counts["sent"],
        "failed": counts["failed"] + counts["unknown"],
        "unknown": counts["unknown"],
        "cancelled": counts["cancelled"],
        "remaining": counts.get("remaining", 0),
    }


async def newsletter_progress(conn: asyncpg.Connection, execution_id: UUID) -> bool:
    """Emit newsletter.progress if the throttle allows (claiming it in the same transaction).

    Call after recording a recipient whose statement found `PROGRESS_DUE`; concurrent callers
    race for the slot under the newsletter's row lock and one wins. False if none was emitted.
    """
    return await _isolated(conn, NEWSLETTER_PROGRESS.name, lambda: _newsletter_progress(conn, execution_id), False)


async def _newsletter_progress(conn: asyncpg.Connection, execution_id: UUID) -> bool:
    row = await conn.fetchrow(
        "UPDATE newsletters n SET progress_notified_at = now() FROM executions x JOIN workflows w "
        "ON w.id = x.workflow_id WHERE n.execution_id = $1 AND x.id = n.execution_id AND x.status = 'running' "
        f"AND {PROGRESS_DUE} RETURNING x.owner_id, x.workflow_id, w.name AS workflow_name, "
        "w.action_type, n.total",
        execution_id,
    )
    if row is None:
        return False
    counts = await conn.fetchrow(_COUNTS, execution_id)
    data = {
        "newsletter": newsletter_counts(execution_id, row["total"], dict(counts)),
        "workflow": _workflow(row),
        "links": {"execution": f"/api/executions/{execution_id}"},
    }
    await emit(
        conn,
        owner_id=row["owner_id"],
        event_type=NEWSLETTER_PROGRESS.name,
        data=data,
        workflow_id=row["workflow_id"],
        action_type=row["action_type"],
        subject_id=str(execution_id),
    )
    return True


async def newsletter_completed(conn: asyncpg.Connection, ended: asyncpg.Record, result: Mapping[str, Any]) -> None:
    """Emit newsletter.completed for a newsletter execution that just ended (`ended`: its
    `terminal.RETURNING` row; `result`: its summary). Call in the transaction that ended it."""
    await _isolated(conn, NEWSLETTER_COMPLETED.name, lambda: _newsletter_completed(conn, ended, result), None)


async def _newsletter_completed(conn: asyncpg.Connection, ended: asyncpg.Record, result: Mapping[str, Any]) -> None:
    if not await subscribes(conn, ended["owner_id"], NEWSLETTER_COMPLETED.name):
        return
    workflow = await conn.fetchrow(
        "SELECT id AS workflow_id, name AS workflow_name, action_type FROM workflows WHERE id = $1",
        ended["workflow_id"],
    )
    if workflow is None:
        return
    execution_id: UUID = ended["id"]
    data = {
        "status": result["status"],
        "newsletter": newsletter_counts(execution_id, int(result["total"]), {**result, "remaining": 0}),
        "workflow": _workflow(workflow),
        "links": {"execution": f"/api/executions/{execution_id}"},
    }
    await emit(
        conn,
        owner_id=ended["owner_id"],
        event_type=NEWSLETTER_COMPLETED.name,
        data=data,
        workflow_id=ended["workflow_id"],
        action_type=workflow["action_type"],
        subject_id=str(execution_id),
    )


# --- credentials -----------------------------------------------------------------------------


async def credential_needs_reconnect(
    conn: asyncpg.Connection,
    credential: asyncpg.Record,
    reason: str,
    paused: Sequence[UUID],
    link_ttl_s: int,
    link_scopes: Sequence[str] = (),
) -> None:
    """Emit credential.needs_reconnect with a fresh connect link for the account.

    `credential`: the row just marked (id, owner_id, provider, kind, account_email, scopes). The
    link's row is created here, in the marking transaction; the notification holds only its id
    (not a secret: a link is its id signed with the keyring), and the signed URL is made when
    the notification is sent (`actions.deliver`), so the bearer link is stored nowhere and
    never reaches Temporal, logs or errors.
    """

    async def write() -> None:
        await _needs_reconnect(conn, credential, reason, paused, link_ttl_s, link_scopes)

    await _isolated(conn, CREDENTIAL_NEEDS_RECONNECT.name, write, None)


async def _needs_reconnect(
    conn: asyncpg.Connection,
    credential: asyncpg.Record,
    reason: str,
    paused: Sequence[UUID],
    link_ttl_s: int,
    link_scopes: Sequence[str],
) -> None:
    owner_id: UUID = credential["owner_id"]
    if not await subscribes(conn, owner_id, CREDENTIAL_NEEDS_RECONNECT.name):
        return
    data = {
        "reason": _clip(reason.split(":", 1)[0].strip()),
        "detail": _clip(reason),
        "credential": {
            "id": str(credential["id"]),
            "provider": credential["provider"],
            "account": credential["account_email"],
        },
        "paused_workflows": [str(w) for w in paused],
        "links": {"credential": f"/api/credentials/{credential['id']}"},
    }
    if credential["kind"] == "oauth2":  # only OAuth2 grants are (re)connected through a link
        data["connect_link"] = await _reconnect_link(conn, credential, link_ttl_s, link_scopes)
    await emit(
        conn,
        owner_id=owner_id,
        event_type=CREDENTIAL_NEEDS_RECONNECT.name,
        data=data,
        subject_id=str(credential["id"]),
    )


async def _reconnect_link(
    conn: asyncpg.Connection, credential: asyncpg.Record, link_ttl_s: int, link_scopes: Sequence[str]
) -> dict[str, str]:
    """A connect link for the credential's account (its scopes and `link_scopes`): id and expiry."""
    scopes = sorted(set(credential["scopes"] or ()) | set(link_scopes) | set(IDENTITY_SCOPES))
    link = await conn.fetchrow(
        "INSERT INTO connect_links (owner_id, provider, scopes, expires_at, account_email) "
        "VALUES ($1, $2, $3, now() + make_interval(secs => $4), $5) RETURNING id, expires_at",
        credential["owner_id"],
        credential["provider"],
        scopes,
        float(link_ttl_s),
        credential["account_email"],
    )
    return {"id": str(link["id"]), "expires_at": link["expires_at"].isoformat()}


# --- trigger sync ----------------------------------------------------------------------------


def sync_failed_notice(row: Mapping[str, Any], error: str) -> Notice:
    """trigger.sync_failed for one workflow (`row`: workflow_id, workflow_name, owner_id,
    trigger_type, action_type, sync_attempts)."""
    data = {
        "workflow": _workflow(row),
        "trigger_type": row["trigger_type"],
        "error": _clip(error),
        "attempts": row["sync_attempts"],
        "links": {"workflow": f"/api/workflows/{row['workflow_id']}"},
    }
    return Notice(
        owner_id=row["owner_id"],
        event_type=TRIGGER_SYNC_FAILED.name,
        data=data,
        workflow_id=row["workflow_id"],
        action_type=row["action_type"],
        subject_id=str(row["workflow_id"]),
    )


async def trigger_sync_failed(conn: asyncpg.Connection, row: Mapping[str, Any], error: str) -> None:
    """Emit trigger.sync_failed (the caller decided the error is new for this workflow)."""
    await _isolated(conn, TRIGGER_SYNC_FAILED.name, lambda: emit_many(conn, [sync_failed_notice(row, error)]), 0)


# --- Gmail watches ---------------------------------------------------------------------------


def _mailbox(row: Mapping[str, Any]) -> dict[str, Any]:
    return {"credential_id": str(row["credential_id"]), "email": row["email"]}


def _time(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


async def watch_failed(conn: asyncpg.Connection, owner_id: UUID, credential_id: UUID, message: str) -> None:
    """Record that watching a mailbox failed, and tell its owner once per failure episode.

    One transaction: `last_error`; the first failure after a success emits
    gmail.watch_renewed_failed if the mailbox had a watch (else trigger.sync_failed for each
    workflow reading it: the watch could not be set up); a watch that expires within
    `WATCH_EXPIRING_WITHIN` emits gmail.watch_expiring once per expiration.
    """
    async with conn.transaction():
        row = await conn.fetchrow(
            "UPDATE gmail_mailboxes m SET last_error = $3, watch_failed_at = coalesce(m.watch_failed_at, now()), "
            "watch_expiring_notified_for = CASE WHEN m.watch_expiration < now() + $4::interval "
            "THEN m.watch_expiration ELSE m.watch_expiring_notified_for END, updated_at = now() "
            "FROM (SELECT credential_id, watch_failed_at, watch_expiring_notified_for FROM gmail_mailboxes "
            "WHERE credential_id = $1 AND owner_id = $2 FOR UPDATE) old "
            "WHERE m.credential_id = old.credential_id RETURNING m.credential_id, m.owner_id, m.email, "
            "m.watch_expiration, m.watch_renewed_at, old.watch_failed_at IS NULL AS first_failure, "
            "(m.watch_expiration < now() + $4::interval AND old.watch_expiring_notified_for "
            "IS DISTINCT FROM m.watch_expiration) AS expiring",
            credential_id,
            owner_id,
            _clip(message),
            WATCH_EXPIRING_WITHIN,
        )
        if row is not None and (row["first_failure"] or row["expiring"]):
            await _isolated(conn, "gmail watch", lambda: _watch_notices(conn, row, message), 0)


async def _watch_notices(conn: asyncpg.Connection, row: asyncpg.Record, message: str) -> int:
    notices: list[Notice] = []
    if row["first_failure"]:
        notices += await _watch_failure_notices(conn, row, message)
    if row["expiring"]:
        notices.append(_watch_expiring_notice(row, message))
    return await emit_many(conn, notices)


async def _watch_failure_notices(conn: asyncpg.Connection, row: asyncpg.Record, message: str) -> list[Notice]:
    if row["watch_expiration"] is not None or row["watch_renewed_at"] is not None:
        data = {
            "mailbox": _mailbox(row),
            "error": _clip(message),
            "expires_at": _time(row["watch_expiration"]),
            "links": {"credential": f"/api/credentials/{row['credential_id']}"},
        }
        subject = str(row["credential_id"])
        return [Notice(row["owner_id"], GMAIL_WATCH_RENEWED_FAILED.name, data, subject_id=subject)]
    readers = await conn.fetch(
        "SELECT id AS workflow_id, name AS workflow_name, owner_id, trigger_type, action_type, sync_attempts "
        "FROM workflows WHERE owner_id = $1 AND routing_key = $2 AND active AND deleted_at IS NULL "
        "AND trigger_type LIKE 'gmail.%' ORDER BY seq LIMIT 100",
        row["owner_id"],
        str(row["credential_id"]),
    )
    return [sync_failed_notice(r, f"the Gmail watch could not be set up: {message}") for r in readers]


def _watch_expiring_notice(row: asyncpg.Record, message: str) -> Notice:
    data = {
        "mailbox": _mailbox(row),
        "expires_at": _time(row["watch_expiration"]),
        "last_error": _clip(message),
        "links": {"credential": f"/api/credentials/{row['credential_id']}"},
    }
    return Notice(row["owner_id"], GMAIL_WATCH_EXPIRING.name, data, subject_id=str(row["credential_id"]))
