"""Owner console sessions, stored as hashes of their random tokens.

The token lives only in the browser's HttpOnly cookie; the row holds its SHA-256, the owner,
the API key the session was opened with and the expiry. A session is valid while it has not
expired and that key is not revoked.
"""

from __future__ import annotations

import hashlib
import secrets
from uuid import UUID

import asyncpg

from schemas.store.owners import KeyHolder


def hash_token(token: str) -> bytes:
    """Tokens are 256-bit random values, so one SHA-256 is enough."""
    return hashlib.sha256(token.encode()).digest()


async def open_session(conn: asyncpg.Connection, holder: KeyHolder, ttl_s: float) -> str:
    """A new session for the key's owner; returns the token (kept only in the cookie)."""
    token = secrets.token_urlsafe(32)
    # Expired sessions of anyone are cleared here, so the table never grows without bound.
    await conn.execute("DELETE FROM console_sessions WHERE expires_at < now()")
    await conn.execute(
        "INSERT INTO console_sessions (token_hash, owner_id, key_id, expires_at) "
        "VALUES ($1, $2, $3, now() + make_interval(secs => $4))",
        hash_token(token),
        holder.owner_id,
        holder.key_id,
        float(ttl_s),
    )
    return token


async def session_owner(conn: asyncpg.Connection, token: str) -> UUID | None:
    """The owner of a live session (unexpired, its API key still active), else None."""
    owner_id: UUID | None = await conn.fetchval(
        "SELECT s.owner_id FROM console_sessions s JOIN api_keys k ON k.id = s.key_id "
        "WHERE s.token_hash = $1 AND s.expires_at > now() AND k.revoked_at IS NULL",
        hash_token(token),
    )
    return owner_id


async def close_session(conn: asyncpg.Connection, token: str) -> None:
    """End a session (sign-out); the token is worthless from now on."""
    await conn.execute("DELETE FROM console_sessions WHERE token_hash = $1", hash_token(token))
