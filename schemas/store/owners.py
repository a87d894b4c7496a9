"""Owners and their API keys."""

from __future__ import annotations

import hashlib
import secrets
from uuid import UUID

import asyncpg

KEY_PREFIX = "hy_"


def hash_key(key: str) -> bytes:
    """API keys are random 256-bit tokens, so one SHA-256 is enough (no stretching needed)."""
    return hashlib.sha256(key.encode()).digest()


async def create_owner(conn: asyncpg.Connection, name: str) -> tuple[UUID, str]:
    """Create an owner and its first API key; the key is returned once and only its hash kept."""
    key = KEY_PREFIX + secrets.token_urlsafe(32)
    async with conn.transaction():
        owner_id: UUID = await conn.fetchval("INSERT INTO owners (name) VALUES ($1) RETURNING id", name)
        await conn.execute(
            "INSERT INTO api_keys (owner_id, key_hash, prefix) VALUES ($1, $2, $3)",
            owner_id,
            hash_key(key),
            key[:10],
        )
    return owner_id, key


async def owner_for_key(conn: asyncpg.Connection, key: str) -> UUID | None:
    """The owner an API key belongs to, or None for an unknown or revoked key."""
    owner: UUID | None = await conn.fetchval(
        "SELECT owner_id FROM api_keys WHERE key_hash = $1 AND revoked_at IS NULL", hash_key(key)
    )
    return owner
