"""Per-workflow secrets for signing outgoing requests (encrypted like every stored secret)."""

from __future__ import annotations

from uuid import UUID

import asyncpg

from schemas.sealed import Cipher, record_aad
from schemas.store.subscriptions import load_secrets


def signing_aad(owner_id: UUID, workflow_id: UUID) -> bytes:
    """Associated data binding a signing secret to its workflow row."""
    return record_aad("workflows", str(owner_id), str(workflow_id), "signing_secret")


async def load_signing_secret(
    conn: asyncpg.Connection, cipher: Cipher, owner_id: UUID, workflow_id: UUID
) -> str | None:
    """The decrypted signing secret of a workflow, or None if it has none.

    For the internal workflow of a subscription: each of its valid secrets, newest first,
    space-separated (all of them sign during a rotation's grace period).
    """
    row = await conn.fetchrow(
        "SELECT signing_secret, internal FROM workflows WHERE id = $1 AND owner_id = $2", workflow_id, owner_id
    )
    if row is None:
        return None
    if row["internal"]:
        return " ".join(await load_secrets(conn, cipher, owner_id, workflow_id)) or None
    token: str | None = row["signing_secret"]
    return None if token is None else cipher.decrypt(token, signing_aad(owner_id, workflow_id)).decode()
