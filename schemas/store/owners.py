"""Owners and their API keys.

Only a key's SHA-256 and its first characters (to recognise it in a list) are stored; the key
itself is shown once, when it is created.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime
from enum import Enum
from uuid import UUID

import asyncpg

from schemas.errors import NotFound
from schemas.store.rows import row_of, rows_of

KEY_PREFIX = "hy_"
_SHOWN_CHARS = 10
KEY_COLUMNS = "id, seq, owner_id, name, prefix, created_at, revoked_at"


def hash_key(key: str) -> bytes:
    """API keys are random 256-bit tokens, so one SHA-256 is enough (no stretching needed)."""
    return hashlib.sha256(key.encode()).digest()


def new_key() -> str:
    """A fresh API key."""
    return KEY_PREFIX + secrets.token_urlsafe(32)


async def create_owner(conn: asyncpg.Connection, name: str) -> tuple[UUID, str]:
    """Create an owner and its first API key; the key is returned once and only its hash kept."""
    async with conn.transaction():
        owner_id: UUID = await conn.fetchval("INSERT INTO owners (name) VALUES ($1) RETURNING id", name)
        _, key = await create_key(conn, owner_id)
    return owner_id, key


@dataclass(frozen=True, slots=True)
class KeyHolder:
    """Who an API key authenticates, and which key it is."""

    owner_id: UUID
    key_id: UUID


@dataclass(frozen=True, slots=True)
class Owner:
    """An owner: its id and (not necessarily unique) name."""

    id: UUID
    name: str


@dataclass(frozen=True, slots=True)
class ApiKey:
    """One API key as stored: never the key itself, only its first characters."""

    id: UUID
    seq: int
    owner_id: UUID
    name: str
    prefix: str
    created_at: datetime
    revoked_at: datetime | None


async def holder_of_key(conn: asyncpg.Connection, key: str) -> KeyHolder:
    """The owner and key id of an active API key; `NotFound` for an unknown or revoked key."""
    row = await conn.fetchrow(
        "SELECT id, owner_id FROM api_keys WHERE key_hash = $1 AND revoked_at IS NULL", hash_key(key)
    )
    if row is None:
        raise NotFound("API key")
    return KeyHolder(row["owner_id"], row["id"])


async def find_owner(conn: asyncpg.Connection, id_or_name: str) -> list[Owner]:
    """Owners matching an id or, failing that, a name (several owners may share a name)."""
    try:
        owner_id = UUID(id_or_name)
    except ValueError:
        return rows_of(
            Owner, await conn.fetch("SELECT id, name FROM owners WHERE name = $1 ORDER BY created_at", id_or_name)
        )
    return rows_of(Owner, await conn.fetch("SELECT id, name FROM owners WHERE id = $1", owner_id))


async def create_key(conn: asyncpg.Connection, owner_id: UUID, name: str = "default") -> tuple[ApiKey, str]:
    """A new active key for the owner: (its row, the key), the key to be shown once."""
    key = new_key()
    row = await conn.fetchrow(
        f"INSERT INTO api_keys (owner_id, key_hash, prefix, name) VALUES ($1, $2, $3, $4) RETURNING {KEY_COLUMNS}",
        owner_id,
        hash_key(key),
        key[:_SHOWN_CHARS],
        name,
    )
    assert row is not None
    return row_of(ApiKey, row), key


async def list_keys(
    conn: asyncpg.Connection, owner_id: UUID, *, limit: int, after_seq: int | None = None
) -> list[ApiKey]:
    """A page of the owner's keys, active and revoked, newest first (fetches limit+1)."""
    return rows_of(
        ApiKey,
        await conn.fetch(
            f"SELECT {KEY_COLUMNS} FROM api_keys WHERE owner_id = $1 AND ($2::bigint IS NULL OR seq < $2) "
            "ORDER BY seq DESC LIMIT $3",
            owner_id,
            after_seq,
            limit + 1,
        ),
    )


class Revoked(Enum):
    """What revoking a key did."""

    REVOKED = "revoked"
    ALREADY = "already revoked"
    LAST_KEY = "last active key in use"


async def revoke_key(conn: asyncpg.Connection, owner_id: UUID, key_id: UUID, in_use: UUID | None = None) -> Revoked:
    """Revoke one of the owner's keys; `NotFound` if the owner has no such key.

    `in_use` is the key authenticating the request: it may be revoked only while another of
    the owner's keys stays active, so an owner cannot lock itself out by accident. The owner
    row is locked first, so two requests revoking each other's keys cannot both succeed.
    """
    async with conn.transaction():
        await conn.execute("SELECT 1 FROM owners WHERE id = $1 FOR UPDATE", owner_id)
        row = await conn.fetchrow("SELECT revoked_at FROM api_keys WHERE id = $1 AND owner_id = $2", key_id, owner_id)
        if row is None:
            raise NotFound("API key")
        if row["revoked_at"] is not None:
            return Revoked.ALREADY
        if key_id == in_use:
            others = await conn.fetchval(
                "SELECT count(*) FROM api_keys WHERE owner_id = $1 AND id <> $2 AND revoked_at IS NULL",
                owner_id,
                key_id,
            )
            if not others:
                return Revoked.LAST_KEY
        await conn.execute("UPDATE api_keys SET revoked_at = now() WHERE id = $1", key_id)
    return Revoked.REVOKED


async def active_keys(conn: asyncpg.Connection, owner_id: UUID) -> int:
    """How many of the owner's keys still authenticate."""
    count: int = await conn.fetchval(
        "SELECT count(*) FROM api_keys WHERE owner_id = $1 AND revoked_at IS NULL", owner_id
    )
    return count
