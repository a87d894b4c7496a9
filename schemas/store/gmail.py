"""Gmail mailboxes: the sync cursor, the Pub/Sub watch, and pushes waiting for the sync.

A mailbox row exists per Google credential that a gmail.* workflow reads. Whether it is
wanted, and which labels, follows from those workflows (`wanted_labels`); the mailbox
workflow reconciles the watch with them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

import asyncpg

DEFAULT_LABELS = ("INBOX",)

_COLUMNS = (
    "credential_id, owner_id, email, status, history_id, notified_history_id, notify_seq, signalled_seq, "
    "label_ids, watch_expiration, watch_renewed_at, last_sync_at, last_error, last_push_at, watch_error"
)


# The owner's view of a mailbox `m`'s watch, as one JSON object (a watch lasts 7 days and is
# renewed daily, so less than 5 days left means renewals are failing).
HEALTH_JSON = (
    "jsonb_build_object("
    "'state', CASE WHEN m.status = 'stopped' THEN 'stopped' WHEN m.watch_error IS NOT NULL THEN 'refused' "
    "WHEN m.watch_expiration IS NULL THEN CASE WHEN m.watch_renewed_at IS NULL THEN 'pending' ELSE 'polled' END "
    "WHEN m.watch_expiration < now() + interval '5 days' THEN 'expiring' ELSE 'watching' END, "
    "'error', m.watch_error, 'expires_at', m.watch_expiration, 'last_watched_at', m.watch_renewed_at, "
    "'last_push_at', m.last_push_at, 'last_sync_at', m.last_sync_at, 'last_error', m.last_error)"
)


@dataclass(frozen=True, slots=True)
class MailboxRef:
    """Which mailbox, and whose: every query filters by both."""

    owner_id: UUID
    credential_id: UUID


async def mailboxes_for_email(conn: asyncpg.Connection, email: str) -> list[MailboxRef]:
    """Active mailboxes with this address, across owners (a push names only the address)."""
    rows = await conn.fetch(
        "SELECT owner_id, credential_id FROM gmail_mailboxes WHERE lower(email) = lower($1) AND status = 'active' "
        "ORDER BY credential_id",
        email,
    )
    return [MailboxRef(r["owner_id"], r["credential_id"]) for r in rows]


async def get_mailbox(conn: asyncpg.Connection, ref: MailboxRef, *, for_update: bool = False) -> asyncpg.Record | None:
    """One mailbox row; `for_update` serialises syncs of the same mailbox."""
    lock = " FOR UPDATE" if for_update else ""
    row: asyncpg.Record | None = await conn.fetchrow(
        f"SELECT {_COLUMNS} FROM gmail_mailboxes WHERE credential_id = $1 AND owner_id = $2{lock}",
        ref.credential_id,
        ref.owner_id,
    )
    return row


async def activate_mailbox(conn: asyncpg.Connection, ref: MailboxRef) -> bool:
    """Create or re-activate the mailbox of a Google credential; False if there is no such credential."""
    done: str = await conn.execute(
        "INSERT INTO gmail_mailboxes (credential_id, owner_id, email) "
        "SELECT id, owner_id, account_email FROM credentials "
        "WHERE id = $1 AND owner_id = $2 AND provider = 'google' AND account_email IS NOT NULL "
        "ON CONFLICT (credential_id) DO UPDATE SET status = 'active', email = excluded.email, updated_at = now()",
        ref.credential_id,
        ref.owner_id,
    )
    return done != "INSERT 0 0"


async def wanted_labels(conn: asyncpg.Connection, ref: MailboxRef) -> list[str] | None:
    """The union of label ids the mailbox's active gmail.* workflows read; None when none reads it."""
    rows = await conn.fetch(
        "SELECT trigger_config->'label_ids' AS labels FROM workflows "
        "WHERE owner_id = $1 AND routing_key = $2 AND active AND deleted_at IS NULL AND trigger_type LIKE 'gmail.%'",
        ref.owner_id,
        str(ref.credential_id),
    )
    if not rows:
        return None
    labels: set[str] = set()
    for row in rows:
        given = row["labels"]
        labels.update(given if isinstance(given, list) and given else DEFAULT_LABELS)
    return sorted(labels)


async def note_pushes(
    conn: asyncpg.Connection, refs: Sequence[MailboxRef], history_ids: Sequence[int]
) -> set[MailboxRef]:
    """Record announced history ids (the max wins) and mark the mailboxes for a signal.

    Returns the mailboxes that are still active; pushes for others are ignored.
    """
    rows = await conn.fetch(
        "UPDATE gmail_mailboxes m SET notify_seq = m.notify_seq + 1, last_push_at = now(), "
        "notified_history_id = greatest(m.notified_history_id, u.history_id), updated_at = now() "
        "FROM (SELECT owner_id, credential_id, max(history_id) AS history_id "
        "      FROM unnest($1::uuid[], $2::uuid[], $3::bigint[]) AS t(owner_id, credential_id, history_id) "
        "      GROUP BY owner_id, credential_id) u "
        "WHERE m.credential_id = u.credential_id AND m.owner_id = u.owner_id AND m.status = 'active' "
        "RETURNING m.owner_id, m.credential_id",
        [r.owner_id for r in refs],
        [r.credential_id for r in refs],
        list(history_ids),
    )
    return {MailboxRef(r["owner_id"], r["credential_id"]) for r in rows}


async def unsignalled(conn: asyncpg.Connection, limit: int) -> list[asyncpg.Record]:
    """Mailboxes with pushes their workflow has not been told about."""
    rows: list[asyncpg.Record] = await conn.fetch(
        "SELECT owner_id, credential_id, notify_seq, coalesce(notified_history_id, 0) AS notified_history_id "
        "FROM gmail_mailboxes WHERE notify_seq > signalled_seq ORDER BY credential_id LIMIT $1",
        limit,
    )
    return rows


async def mark_signalled(conn: asyncpg.Connection, credential_ids: Sequence[UUID], seqs: Sequence[int]) -> None:
    """The workflow has been told about pushes up to `seqs` (later pushes keep the row pending)."""
    await conn.execute(
        "UPDATE gmail_mailboxes m SET signalled_seq = greatest(m.signalled_seq, u.seq) "
        "FROM unnest($1::uuid[], $2::bigint[]) AS u(credential_id, seq) WHERE m.credential_id = u.credential_id",
        list(credential_ids),
        list(seqs),
    )


async def record_watch(
    conn: asyncpg.Connection, ref: MailboxRef, history_id: int, expiration: datetime | None, label_ids: Sequence[str]
) -> None:
    """A watch was made or renewed (`expiration` None: polled, no push); the cursor starts at
    its history id only if there was none."""
    await conn.execute(
        "UPDATE gmail_mailboxes SET status = 'active', history_id = coalesce(history_id, $3), "
        "watch_expiration = $4, watch_renewed_at = now(), label_ids = $5, last_error = NULL, watch_error = NULL, "
        "watch_failed_at = NULL, "
        "updated_at = now() "
        "WHERE credential_id = $1 AND owner_id = $2",
        ref.credential_id,
        ref.owner_id,
        history_id,
        expiration,
        list(label_ids),
    )


async def record_stopped(conn: asyncpg.Connection, ref: MailboxRef) -> bool:
    """No workflow reads the mailbox any more; False if one was activated meanwhile (nothing changed)."""
    done: str = await conn.execute(
        "UPDATE gmail_mailboxes SET status = 'stopped', watch_expiration = NULL, updated_at = now() "
        "WHERE credential_id = $1 AND owner_id = $2 AND NOT EXISTS ("
        "  SELECT 1 FROM workflows WHERE owner_id = $2 AND routing_key = $1::text AND active "
        "  AND deleted_at IS NULL AND trigger_type LIKE 'gmail.%')",
        ref.credential_id,
        ref.owner_id,
    )
    return done != "UPDATE 0"


async def advance_cursor(conn: asyncpg.Connection, ref: MailboxRef, history_id: int, *, reset: bool = False) -> None:
    """Move the cursor forward after a sync (never back), or set it after a full sync (`reset`)."""
    await conn.execute(
        "UPDATE gmail_mailboxes SET history_id = CASE WHEN $4 THEN $3 ELSE greatest(history_id, $3) END, "
        "last_sync_at = now(), last_error = NULL, updated_at = now() WHERE credential_id = $1 AND owner_id = $2",
        ref.credential_id,
        ref.owner_id,
        history_id,
        reset,
    )


async def record_error(conn: asyncpg.Connection, ref: MailboxRef, message: str) -> None:
    """Why the last sync or watch failed, for the owner to see."""
    await conn.execute(
        "UPDATE gmail_mailboxes SET last_error = $3, updated_at = now() WHERE credential_id = $1 AND owner_id = $2",
        ref.credential_id,
        ref.owner_id,
        message[:500],
    )


async def record_watch_error(conn: asyncpg.Connection, ref: MailboxRef, message: str) -> None:
    """Gmail refused the watch: kept until a watch succeeds (a sync does not clear it)."""
    await conn.execute(
        "UPDATE gmail_mailboxes SET watch_error = $3, last_error = $3, updated_at = now() "
        "WHERE credential_id = $1 AND owner_id = $2",
        ref.credential_id,
        ref.owner_id,
        message[:500],
    )


async def record_credential_dead(conn: asyncpg.Connection, ref: MailboxRef, message: str) -> None:
    """The mailbox's grant is dead: stop taking pushes for it and say why. Reconnecting resumes
    its workflows, whose sync hook activates the mailbox again (its cursor is kept)."""
    await conn.execute(
        "UPDATE gmail_mailboxes SET status = 'stopped', watch_expiration = NULL, last_error = $3, updated_at = now() "
        "WHERE credential_id = $1 AND owner_id = $2",
        ref.credential_id,
        ref.owner_id,
        message[:500],
    )


async def mailbox_health(conn: asyncpg.Connection, owner_id: UUID, credential_id: UUID) -> dict[str, Any] | None:
    """The owner's view of a mailbox's watch and sync (`HEALTH_JSON`), or None if it has none."""
    health: dict[str, Any] | None = await conn.fetchval(
        f"SELECT {HEALTH_JSON} FROM gmail_mailboxes m WHERE m.credential_id = $1 AND m.owner_id = $2",
        credential_id,
        owner_id,
    )
    return health
