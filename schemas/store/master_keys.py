"""Master-key rotation: re-wrap every stored secret under the keyring's primary key.

The keyring is passed in (`oauth.crypto.Keyring` satisfies `Rewrapper`), so this module holds
the SQL and nothing of the cryptography. Rotation without downtime, in three steps (docs/operations.md):
1. give every process the keyring `new,old` (new first: it encrypts; old still decrypts);
2. run `hookyard keys rotate`: each secret's data key is re-wrapped under `new`, in small
   transactions, skipping rows another process holds, so it can be stopped and run again;
3. when `hookyard keys status` shows nothing left under `old`, drop `old` from the keyring.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from uuid import UUID

import asyncpg

from schemas.sealed import Rewrapper, SealError, record_aad


@dataclass(frozen=True, slots=True)
class SealedColumn:
    """Where ciphertexts live and how each row's associated data is formed."""

    label: str
    table: str
    column: str
    # FROM clause with the alias `t` for the table holding the ciphertext, and the owner's id.
    source: str
    owner: str

    def select(self, where: str = "", lock: bool = False) -> str:
        """id, owner_id and token of rows holding a ciphertext (optionally locked)."""
        sql = (
            f"SELECT t.id, {self.owner} AS owner_id, t.{self.column} AS token FROM {self.source} "
            f"WHERE t.{self.column} IS NOT NULL {where}"
        )
        return sql + (" FOR UPDATE OF t SKIP LOCKED" if lock else "")


SEALED: tuple[SealedColumn, ...] = (
    SealedColumn(
        "endpoint secrets",
        "endpoint_secrets",
        "ciphertext",
        "endpoint_secrets t JOIN endpoints e ON e.id = t.endpoint_id",
        "e.owner_id",
    ),
    SealedColumn("workflow signing secrets", "workflows", "signing_secret", "workflows t", "t.owner_id"),
    SealedColumn("credentials", "credentials", "secret", "credentials t", "t.owner_id"),
)


def _key_id_sql(expr: str) -> str:
    # Tokens are `v1.<key id>.<wrapped>.<body>`.
    return f"split_part({expr}, '.', 2)"


async def key_status(conn: asyncpg.Connection) -> dict[str, dict[str, int]]:
    """How many secrets each master key id protects, per kind of secret."""
    status: dict[str, dict[str, int]] = {}
    for sealed in SEALED:
        rows = await conn.fetch(
            f"SELECT {_key_id_sql('token')} AS kid, count(*) AS n FROM ({sealed.select()}) s GROUP BY 1 ORDER BY 1"
        )
        status[sealed.label] = {r["kid"]: r["n"] for r in rows}
    return status


async def rotate(
    conn: asyncpg.Connection,
    keyring: Rewrapper,
    *,
    batch_size: int = 200,
    progress: Callable[[str, int], None] | None = None,
    on_error: Callable[[str, UUID, SealError], None] | None = None,
) -> dict[str, int]:
    """Re-wrap every secret not under the primary key; returns how many per kind.

    Each batch is its own transaction and locks only its rows (SKIP LOCKED), so running
    processes keep working and an interrupted rotation resumes where it stopped.
    """
    done: dict[str, int] = {}
    for sealed in SEALED:
        count = 0
        broken: list[UUID] = []
        while True:
            async with conn.transaction():
                # Locked as read, so a concurrent refresh cannot be overwritten with a stale
                # token; rows other processes hold are skipped and picked up by a later run.
                where = f"AND {_key_id_sql('t.' + sealed.column)} <> $1 AND t.id <> ALL($3::uuid[]) LIMIT $2"
                rows = await conn.fetch(sealed.select(where, lock=True), keyring.primary_id, batch_size, broken)
                updates = []
                for r in rows:
                    try:
                        updates.append((r["id"], keyring.rewrap(r["token"], _aad(sealed, r["owner_id"], r["id"]))))
                    except SealError as exc:
                        # One damaged or foreign ciphertext must not stop the rotation of the rest.
                        broken.append(r["id"])
                        if on_error is not None:
                            on_error(sealed.label, r["id"], exc)
                await conn.executemany(f"UPDATE {sealed.table} SET {sealed.column} = $2 WHERE id = $1", updates)
            count += len(updates)
            if progress is not None:
                progress(sealed.label, count)
            if len(rows) < batch_size:
                break
        done[sealed.label] = count
    return done


def _aad(sealed: SealedColumn, owner_id: object, row_id: object) -> bytes:
    return record_aad(sealed.table, str(owner_id), str(row_id), sealed.column)
