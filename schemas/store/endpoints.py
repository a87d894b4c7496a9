"""Webhook endpoints and their signing secrets (encrypted, several valid during a rotation)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from uuid import UUID

import asyncpg

from schemas.errors import NotFound
from schemas.sealed import Cipher, record_aad
from schemas.store.rows import row_of, rows_of


@dataclass(frozen=True, slots=True)
class EndpointAuth:
    """What ingest needs to verify a request: the scheme and every currently valid secret."""

    endpoint_id: UUID
    owner_id: UUID
    scheme: str
    secrets: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Endpoint:
    """A webhook endpoint (never its secrets); `active_secrets` is counted by `get_endpoint` only."""

    id: UUID
    seq: int
    owner_id: UUID
    name: str
    scheme: str
    created_at: datetime
    active_secrets: int | None = None


_COLUMNS = "e.id, e.seq, e.owner_id, e.name, e.scheme, e.created_at"


def _aad(owner_id: UUID, secret_id: UUID) -> bytes:
    return record_aad("endpoint_secrets", str(owner_id), str(secret_id), "ciphertext")


async def _add_secret(conn: asyncpg.Connection, cipher: Cipher, owner_id: UUID, endpoint_id: UUID, secret: str) -> None:
    secret_id: UUID = await conn.fetchval("SELECT gen_random_uuid()")
    token = cipher.encrypt(secret.encode(), _aad(owner_id, secret_id))
    await conn.execute(
        "INSERT INTO endpoint_secrets (id, endpoint_id, ciphertext) VALUES ($1, $2, $3)",
        secret_id,
        endpoint_id,
        token,
    )


async def create_endpoint(
    conn: asyncpg.Connection, cipher: Cipher, owner_id: UUID, name: str, scheme: str, secret: str
) -> Endpoint:
    """Create an endpoint with its first secret, in one transaction."""
    async with conn.transaction():
        row = await conn.fetchrow(
            "INSERT INTO endpoints (owner_id, name, scheme) VALUES ($1, $2, $3) "
            "RETURNING id, seq, owner_id, name, scheme, created_at",
            owner_id,
            name,
            scheme,
        )
        await _add_secret(conn, cipher, owner_id, row["id"], secret)
    return row_of(Endpoint, row)


async def list_endpoints(
    conn: asyncpg.Connection, owner_id: UUID, *, limit: int, after_seq: int | None = None
) -> list[Endpoint]:
    """A page of the owner's endpoints, newest first (limit+1 rows to detect a next page)."""
    rows = await conn.fetch(
        f"SELECT {_COLUMNS} FROM endpoints e WHERE e.owner_id = $1 AND e.deleted_at IS NULL "
        "AND ($2::bigint IS NULL OR e.seq < $2) ORDER BY e.seq DESC LIMIT $3",
        owner_id,
        after_seq,
        limit + 1,
    )
    return rows_of(Endpoint, rows)


async def get_endpoint(conn: asyncpg.Connection, owner_id: UUID, endpoint_id: UUID) -> Endpoint:
    """One of the owner's live endpoints, with the count of secrets still valid; else `NotFound`."""
    row = await conn.fetchrow(
        f"SELECT {_COLUMNS}, (SELECT count(*) FROM endpoint_secrets s WHERE s.endpoint_id = e.id "
        "AND (s.expires_at IS NULL OR s.expires_at > now())) AS active_secrets "
        "FROM endpoints e WHERE e.id = $1 AND e.owner_id = $2 AND e.deleted_at IS NULL",
        endpoint_id,
        owner_id,
    )
    if row is None:
        raise NotFound("endpoint")
    return row_of(Endpoint, row)


async def delete_endpoint(conn: asyncpg.Connection, owner_id: UUID, endpoint_id: UUID) -> None:
    """Soft-delete (its events stay listable); ingest answers 404 from then on. `NotFound` if not live."""
    async with conn.transaction():
        status: str = await conn.execute(
            "UPDATE endpoints SET deleted_at = now() WHERE id = $1 AND owner_id = $2 AND deleted_at IS NULL",
            endpoint_id,
            owner_id,
        )
        # The secrets go only with an endpoint this owner actually had: the id alone is not proof.
        if not status.endswith(" 1"):
            raise NotFound("endpoint")
        await conn.execute("DELETE FROM endpoint_secrets WHERE endpoint_id = $1", endpoint_id)
        await notify_endpoint_changed(conn, endpoint_id)


async def rotate_secret(
    conn: asyncpg.Connection,
    cipher: Cipher,
    owner_id: UUID,
    endpoint_id: UUID,
    secret: str,
    grace_s: int,
) -> None:
    """Add a new current secret; the ones valid so far stay valid for `grace_s` seconds.

    `NotFound` if the owner has no such live endpoint.
    """
    async with conn.transaction():
        found = await conn.fetchval(
            "SELECT 1 FROM endpoints WHERE id = $1 AND owner_id = $2 AND deleted_at IS NULL FOR UPDATE",
            endpoint_id,
            owner_id,
        )
        if not found:
            raise NotFound("endpoint")
        await conn.execute(
            "UPDATE endpoint_secrets SET expires_at = LEAST(coalesce(expires_at, 'infinity'), "
            "now() + make_interval(secs => $2)) WHERE endpoint_id = $1",
            endpoint_id,
            float(grace_s),
        )
        await _add_secret(conn, cipher, owner_id, endpoint_id, secret)
        await notify_endpoint_changed(conn, endpoint_id)


async def load_auth(conn: asyncpg.Connection, cipher: Cipher, endpoint_id: UUID) -> EndpointAuth:
    """The scheme and valid secrets of a live endpoint (newest first), decrypted; else `NotFound`."""
    rows = await conn.fetch(
        "SELECT e.owner_id, e.scheme, s.id AS secret_id, s.ciphertext FROM endpoints e "
        "JOIN endpoint_secrets s ON s.endpoint_id = e.id "
        "WHERE e.id = $1 AND e.deleted_at IS NULL AND (s.expires_at IS NULL OR s.expires_at > now()) "
        "ORDER BY s.created_at DESC",
        endpoint_id,
    )
    if not rows:
        raise NotFound("endpoint")
    owner_id = rows[0]["owner_id"]
    secrets = tuple(cipher.decrypt(r["ciphertext"], _aad(owner_id, r["secret_id"])).decode() for r in rows)
    return EndpointAuth(endpoint_id, owner_id, rows[0]["scheme"], secrets)


ENDPOINTS_CHANNEL = "hookyard_endpoints"


async def notify_endpoint_changed(conn: asyncpg.Connection, endpoint_id: UUID) -> None:
    """Tell every ingest process to drop its cached copy (delivered when the transaction commits)."""
    await conn.execute("SELECT pg_notify($1, $2)", ENDPOINTS_CHANNEL, str(endpoint_id))
