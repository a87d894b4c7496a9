"""Per-workflow secrets for signing outgoing requests (encrypted like every stored secret)."""

from __future__ import annotations

from uuid import UUID

import asyncpg

from schemas.sealed import Cipher, record_aad
from schemas.store.subscriptions import open_secret


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
    # One round trip for both kinds: a subscription's valid secrets join its internal workflow.
    rows = await conn.fetch(
        "SELECT w.signing_secret, k.id AS secret_id, k.ciphertext FROM workflows w "
        "LEFT JOIN subscriptions s ON w.internal AND s.workflow_id = w.id "
        "LEFT JOIN subscription_secrets k ON k.subscription_id = s.id "
        "AND (k.expires_at IS NULL OR k.expires_at > now()) "
        "WHERE w.id = $1 AND w.owner_id = $2 ORDER BY k.created_at DESC",
        workflow_id,
        owner_id,
    )
    keys = [open_secret(cipher, owner_id, r["secret_id"], r["ciphertext"]) for r in rows if r["secret_id"]]
    if keys:
        return " ".join(keys)
    token: str | None = rows[0]["signing_secret"] if rows else None
    return None if token is None else cipher.decrypt(token, signing_aad(owner_id, workflow_id)).decode()
