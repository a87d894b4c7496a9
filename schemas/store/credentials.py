"""Credentials (OAuth2 tokens, provider API keys) and connect links.

The secret fields of a credential are one JSON object, envelope-encrypted and bound to the
row (owner, credential id, column), so a ciphertext moved to another row fails to decrypt.
Nothing here returns a secret except `load_secret`, which the worker and OAuth flows use.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID, uuid4

import asyncpg
import orjson

from schemas.errors import NotFound
from schemas.sanitize import strip_nul
from schemas.sealed import Cipher, record_aad
from schemas.store import notification_events
from schemas.store.rows import row_of, rows_of
from schemas.store.workflows import cancel_pending


@dataclass(frozen=True, slots=True)
class Credential:
    """A credential's public columns: what it is and whether it works, never the secret."""

    id: UUID
    seq: int
    owner_id: UUID
    provider: str
    kind: str
    name: str
    account_email: str | None
    scopes: list[str]
    status: str
    status_reason: str | None
    expires_at: datetime | None
    last_refreshed_at: datetime | None
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class ConnectLink:
    """A connect link; `expired` is judged by the database clock when the row is read."""

    id: UUID
    owner_id: UUID
    provider: str
    scopes: list[str]
    redirect_after: str | None
    expires_at: datetime
    used_at: datetime | None
    expired: bool
    # Set on links that reconnect one account (credential.needs_reconnect): no other may use it.
    account_email: str | None = None


# How long a connect link made for a reconnect stays valid unless told (HOOKYARD_CONNECT_LINK_TTL_S).
DEFAULT_LINK_TTL_S = 72 * 3600

# Why hookyard paused a workflow (workflows.paused_reason): its mailbox's grant is gone.
PAUSED_NEEDS_RECONNECT = "credential_needs_reconnect"

# Every column but the secret: what the API may show.
PUBLIC_COLUMNS = (
    "id, seq, owner_id, provider, kind, name, account_email, scopes, status, status_reason, "
    "expires_at, last_refreshed_at, created_at, updated_at"
)


def secret_aad(owner_id: UUID, credential_id: UUID) -> bytes:
    """Associated data binding a credential's secret to its row."""
    return record_aad("credentials", str(owner_id), str(credential_id), "secret")


def seal(cipher: Cipher, owner_id: UUID, credential_id: UUID, secret: Mapping[str, Any]) -> str:
    """Encrypt a credential's secret fields for its row."""
    return cipher.encrypt(orjson.dumps(dict(secret)), secret_aad(owner_id, credential_id))


def unseal(cipher: Cipher, owner_id: UUID, credential_id: UUID, token: str) -> dict[str, Any]:
    """Decrypt a credential's secret fields."""
    value: dict[str, Any] = orjson.loads(cipher.decrypt(token, secret_aad(owner_id, credential_id)))
    return value


async def insert_api_key(
    conn: asyncpg.Connection,
    cipher: Cipher,
    owner_id: UUID,
    provider: str,
    name: str,
    secret: Mapping[str, str],
) -> Credential:
    """Store a provider API-key credential; returns its public columns."""
    credential_id = uuid4()
    row = await conn.fetchrow(
        f"INSERT INTO credentials (id, owner_id, provider, kind, name, secret) "
        f"VALUES ($1, $2, $3, 'api_key', $4, $5) RETURNING {PUBLIC_COLUMNS}",
        credential_id,
        owner_id,
        provider,
        name,
        seal(cipher, owner_id, credential_id, secret),
    )
    return row_of(Credential, row)


async def upsert_oauth(
    conn: asyncpg.Connection,
    cipher: Cipher,
    owner_id: UUID,
    provider: str,
    account_email: str,
    scopes: list[str],
    tokens: Mapping[str, Any],
    expires_at: datetime | None,
) -> tuple[Credential, bool]:
    """Store tokens for an account; reconnecting updates the same credential.

    Returns (public row, created). A reconnect without a new refresh token keeps the old one
    (Google issues one only on the first consent).
    """
    async with conn.transaction():
        credential_id = uuid4()
        # ON CONFLICT: two first connections of one account at once must not both insert.
        row = await conn.fetchrow(
            f"INSERT INTO credentials (id, owner_id, provider, kind, name, account_email, scopes, secret, "
            f"expires_at, last_refreshed_at) VALUES ($1, $2, $3, 'oauth2', $4, $4, $5, $6, $7, now()) "
            f"ON CONFLICT (owner_id, provider, lower(account_email)) WHERE kind = 'oauth2' DO NOTHING "
            f"RETURNING {PUBLIC_COLUMNS}",
            credential_id,
            owner_id,
            provider,
            account_email,
            sorted(set(scopes)),
            seal(cipher, owner_id, credential_id, tokens),
            expires_at,
        )
        if row is not None:
            return row_of(Credential, row), True
        existing = await conn.fetchrow(
            "SELECT id, status, secret FROM credentials WHERE owner_id = $1 AND provider = $2 "
            "AND lower(account_email) = lower($3) AND kind = 'oauth2' FOR UPDATE",
            owner_id,
            provider,
            account_email,
        )
        credential_id = existing["id"]
        was = existing["status"]
        merged = dict(tokens)
        if not merged.get("refresh_token"):
            old = unseal(cipher, owner_id, credential_id, existing["secret"])
            if old.get("refresh_token"):
                merged["refresh_token"] = old["refresh_token"]
        row = await conn.fetchrow(
            f"UPDATE credentials SET scopes = $3, secret = $4, expires_at = $5, status = 'active', "
            f"status_reason = NULL, last_refreshed_at = now(), updated_at = now() "
            f"WHERE id = $1 AND owner_id = $2 RETURNING {PUBLIC_COLUMNS}",
            credential_id,
            owner_id,
            sorted(set(scopes)),
            seal(cipher, owner_id, credential_id, merged),
            expires_at,
        )
        if was != "active":
            # A reconnect cures the pause: the workflows hookyard paused run again (their sync
            # hook re-arms the watch, and the mailbox syncs from its stored cursor).
            await resume_paused(conn, owner_id, credential_id)
        return row_of(Credential, row), False


async def list_credentials(
    conn: asyncpg.Connection, owner_id: UUID, *, limit: int, after_seq: int | None = None
) -> list[Credential]:
    """One page of an owner's credentials, newest first (fetches limit+1 to detect more)."""
    rows = await conn.fetch(
        f"SELECT {PUBLIC_COLUMNS} FROM credentials WHERE owner_id = $1 AND ($2::bigint IS NULL OR seq < $2) "
        f"ORDER BY seq DESC LIMIT $3",
        owner_id,
        after_seq,
        limit + 1,
    )
    return rows_of(Credential, rows)


async def get_credential(conn: asyncpg.Connection, owner_id: UUID, credential_id: UUID) -> Credential:
    """An owner's credential, public columns only; `NotFound` if the owner has none with this id."""
    row = await conn.fetchrow(
        f"SELECT {PUBLIC_COLUMNS} FROM credentials WHERE id = $1 AND owner_id = $2", credential_id, owner_id
    )
    if row is None:
        raise NotFound("credential")
    return row_of(Credential, row)


async def load_secret(
    conn: asyncpg.Connection, cipher: Cipher, owner_id: UUID, credential_id: UUID, *, for_update: bool = False
) -> tuple[Credential, dict[str, Any]]:
    """An owner's credential with its decrypted secret; `for_update` row-locks it (refresh).

    `NotFound` if the owner has no credential with this id.
    """
    lock = " FOR UPDATE" if for_update else ""
    row = await conn.fetchrow(
        f"SELECT {PUBLIC_COLUMNS}, secret FROM credentials WHERE id = $1 AND owner_id = $2{lock}",
        credential_id,
        owner_id,
    )
    if row is None:
        raise NotFound("credential")
    public = {name: value for name, value in row.items() if name != "secret"}
    return row_of(Credential, public), unseal(cipher, owner_id, credential_id, row["secret"])


async def store_refreshed(
    conn: asyncpg.Connection,
    cipher: Cipher,
    owner_id: UUID,
    credential_id: UUID,
    secret: Mapping[str, Any],
    expires_at: datetime | None,
) -> None:
    """Replace a credential's tokens after a refresh."""
    await conn.execute(
        "UPDATE credentials SET secret = $3, expires_at = $4, last_refreshed_at = now(), updated_at = now() "
        "WHERE id = $1 AND owner_id = $2",
        credential_id,
        owner_id,
        seal(cipher, owner_id, credential_id, secret),
        expires_at,
    )


async def mark_needs_reconnect(
    conn: asyncpg.Connection,
    owner_id: UUID,
    credential_id: UUID,
    reason: str,
    *,
    link_ttl_s: int = DEFAULT_LINK_TTL_S,
    link_scopes: Sequence[str] = (),
) -> list[UUID] | None:
    """Flag a credential whose grant is gone and pause the Gmail triggers reading its mailbox.

    The pause is hookyard's (`paused_reason`), so reconnecting resumes exactly these workflows.
    In the same transaction the owner is notified (credential.needs_reconnect), with a connect
    link for the account valid `link_ttl_s` and asking for its scopes and `link_scopes`.
    Returns the ids of the workflows paused, or None if the credential was not active (someone
    marked it first: nothing changes, and nothing should be logged twice).
    """
    reason = strip_nul(reason)  # a provider's message may hold NUL, which text refuses
    async with conn.transaction():
        marked = await conn.fetchrow(
            "UPDATE credentials SET status = 'needs_reconnect', status_reason = $3, updated_at = now() "
            "WHERE id = $1 AND owner_id = $2 AND status = 'active' "
            "RETURNING id, owner_id, provider, kind, account_email, scopes",
            credential_id,
            owner_id,
            reason[:500],
        )
        if marked is None:
            return None
        # routing_key holds the canonical mailbox id, whatever case the config was written in.
        paused = await conn.fetch(
            "UPDATE workflows SET active = false, paused_reason = $3, updated_at = now() "
            "WHERE owner_id = $1 AND active AND deleted_at IS NULL AND trigger_type LIKE 'gmail.%' "
            "AND routing_key = $2 RETURNING id",
            owner_id,
            str(credential_id),
            PAUSED_NEEDS_RECONNECT,
        )
        for row in paused:
            await cancel_pending(conn, row["id"])
        ids = [row["id"] for row in paused]
        await notification_events.credential_needs_reconnect(conn, marked, reason, ids, link_ttl_s, link_scopes)
    return ids


async def resume_paused(conn: asyncpg.Connection, owner_id: UUID, credential_id: UUID) -> list[UUID]:
    """Resume the workflows hookyard paused for this credential (never one the owner deactivated)."""
    rows = await conn.fetch(
        "UPDATE workflows SET active = true, paused_reason = NULL, updated_at = now() "
        "WHERE owner_id = $1 AND routing_key = $2 AND paused_reason = $3 AND deleted_at IS NULL RETURNING id",
        owner_id,
        str(credential_id),
        PAUSED_NEEDS_RECONNECT,
    )
    # Workflows on the mailbox that were active without being paused (activated by the owner
    # while the grant was dead) saw their mailbox stopped: have the sync loop watch it again.
    touched = await conn.execute(
        "UPDATE workflows SET sync_version = sync_version + 1, sync_attempts = 0, sync_retry_at = NULL "
        "WHERE owner_id = $1 AND routing_key = $2 AND active AND deleted_at IS NULL AND trigger_type LIKE 'gmail.%' "
        "AND NOT (id = ANY($3::uuid[]))",
        owner_id,
        str(credential_id),
        [row["id"] for row in rows],
    )
    if touched != "UPDATE 0":
        await conn.execute("SELECT pg_notify('hookyard_trigger_sync', '')")
    return [row["id"] for row in rows]


@dataclass(frozen=True, slots=True)
class WorkflowUsing:
    """A live workflow that uses a credential (for the refusal to delete it)."""

    id: UUID
    name: str


async def workflows_using(conn: asyncpg.Connection, owner_id: UUID, credential_id: UUID) -> list[WorkflowUsing]:
    """The owner's live workflows that read this credential (mailbox, outbox) or act with it (at most 100)."""
    rows = await conn.fetch(
        "SELECT id, name FROM workflows WHERE owner_id = $1 AND deleted_at IS NULL "
        "AND (credential_id = $2 OR (trigger_type LIKE 'gmail.%' AND routing_key = $2::text) "
        "OR (trigger_type = 'postgres.outbox' AND trigger_config->>'credential_id' = $2::text)) "
        "ORDER BY seq LIMIT 100",
        owner_id,
        credential_id,
    )
    return rows_of(WorkflowUsing, rows)


async def delete_credential(conn: asyncpg.Connection, owner_id: UUID, credential_id: UUID) -> None:
    """Delete an owner's credential; `NotFound` if there was none."""
    done: str = await conn.execute("DELETE FROM credentials WHERE id = $1 AND owner_id = $2", credential_id, owner_id)
    if done == "DELETE 0":
        raise NotFound("credential")


async def account_shared(conn: asyncpg.Connection, credential_id: UUID) -> bool:
    """Whether another credential (of any owner) holds a grant for the same OAuth account."""
    shared: bool = await conn.fetchval(
        "SELECT EXISTS (SELECT 1 FROM credentials o JOIN credentials c ON c.id = $1 "
        "WHERE o.id <> c.id AND o.kind = 'oauth2' AND o.provider = c.provider "
        "AND lower(o.account_email) = lower(c.account_email))",
        credential_id,
    )
    return shared


async def credential_provider(conn: asyncpg.Connection, owner_id: UUID, credential_id: UUID) -> str | None:
    """The provider of an owner's credential (to check action and trigger configs), or None."""
    provider: str | None = await conn.fetchval(
        "SELECT provider FROM credentials WHERE id = $1 AND owner_id = $2", credential_id, owner_id
    )
    return provider


# Connect links ---------------------------------------------------------------------------

_LINK_COLUMNS = (
    "id, owner_id, provider, scopes, redirect_after, expires_at, used_at, expires_at <= now() AS expired, account_email"
)


async def insert_connect_link(
    conn: asyncpg.Connection,
    owner_id: UUID,
    provider: str,
    scopes: list[str],
    redirect_after: str | None,
    expires_at: datetime,
) -> ConnectLink:
    """Record a new connect link."""
    row = await conn.fetchrow(
        "INSERT INTO connect_links (owner_id, provider, scopes, redirect_after, expires_at) "
        f"VALUES ($1, $2, $3, $4, $5) RETURNING {_LINK_COLUMNS}",
        owner_id,
        provider,
        scopes,
        redirect_after,
        expires_at,
    )
    return row_of(ConnectLink, row)


async def get_connect_link(conn: asyncpg.Connection, link_id: UUID) -> ConnectLink:
    """A connect link by id (the caller has checked the link's signature); else `NotFound`."""
    row = await conn.fetchrow(f"SELECT {_LINK_COLUMNS} FROM connect_links WHERE id = $1", link_id)
    if row is None:
        raise NotFound("connect link")
    return row_of(ConnectLink, row)


async def use_connect_link(conn: asyncpg.Connection, link_id: UUID, credential_id: UUID) -> bool:
    """Mark a link used by a completed connection; False if it was used or expired meanwhile."""
    done: str = await conn.execute(
        "UPDATE connect_links SET used_at = now(), credential_id = $2 "
        "WHERE id = $1 AND used_at IS NULL AND expires_at > now()",
        link_id,
        credential_id,
    )
    return done != "UPDATE 0"
