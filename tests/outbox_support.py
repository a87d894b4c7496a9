"""An owner's own database for outbox tests: a second database on the test server, with the
reference outbox table (`ent_notification`), and helpers to make credentials and workflows."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import asyncpg
import pytest

from tests.conftest import Owner, Stack

OWNER_DB = "owner_outbox"
OWNER_USER = "outbox_app"
# The test server trusts every local user: the password is only there to prove it never leaks.
OWNER_PASSWORD = "pw-SECRET-7f3a"

REFERENCE_TABLE = """
CREATE TABLE IF NOT EXISTS {name} (
    id                   bigserial PRIMARY KEY,
    notification_status  text NOT NULL DEFAULT 'PENDING',
    publish_status       text NOT NULL DEFAULT 'PUBLISH',
    recipients           text[] NOT NULL DEFAULT '{{subscriber-1}}',
    payload              jsonb NOT NULL DEFAULT '{{}}',
    scheduled_send_time  timestamptz,
    channels             text[],
    error_details        jsonb,
    updated_at           timestamptz NOT NULL DEFAULT now()
)
"""


@dataclass
class OwnerDb:
    """The owner's database: its URLs (for credentials, and for the test's own statements)."""

    url: str
    admin_url: str
    host: str
    port: int


@pytest.fixture(scope="session")
def owner_db(stack: Stack) -> Iterator[OwnerDb]:
    import asyncio

    parts = urlsplit(stack.database_url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 5432

    async def create() -> None:
        conn = await asyncpg.connect(stack.database_url)
        try:
            if not await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", OWNER_DB):
                await conn.execute(f"CREATE DATABASE {OWNER_DB}")
            if not await conn.fetchval("SELECT 1 FROM pg_roles WHERE rolname = $1", OWNER_USER):
                await conn.execute(f"CREATE ROLE {OWNER_USER} LOGIN PASSWORD '{OWNER_PASSWORD}'")
        finally:
            await conn.close()
        admin = await asyncpg.connect(f"postgresql://postgres@{host}:{port}/{OWNER_DB}")
        try:
            await admin.execute(f"GRANT ALL ON SCHEMA public TO {OWNER_USER}")
        finally:
            await admin.close()

    asyncio.run(create())
    yield OwnerDb(
        url=f"postgresql://{OWNER_USER}:{OWNER_PASSWORD}@{host}:{port}/{OWNER_DB}",
        admin_url=f"postgresql://{OWNER_USER}@{host}:{port}/{OWNER_DB}",
        host=host,
        port=port,
    )


@pytest.fixture
async def owner_conn(owner_db: OwnerDb) -> AsyncIterator[asyncpg.Connection]:
    """A connection to the owner's database, as the owner's application would hold one."""
    conn = await asyncpg.connect(owner_db.admin_url)
    yield conn
    await conn.close()


async def make_table(conn: asyncpg.Connection, name: str) -> None:
    """A fresh reference outbox table called `name`."""
    await conn.execute(f"DROP TABLE IF EXISTS {name}")
    await conn.execute(REFERENCE_TABLE.format(name=name))


async def insert_rows(conn: asyncpg.Connection, table: str, count: int, **values: Any) -> list[int]:
    """Insert `count` rows (column values as given, defaults otherwise); returns their ids."""
    columns = ", ".join(values) if values else ""
    marks = ", ".join(f"${i + 1}" for i in range(len(values)))
    sql = (
        f"INSERT INTO {table} ({columns}) VALUES ({marks}) RETURNING id"
        if values
        else f"INSERT INTO {table} DEFAULT VALUES RETURNING id"
    )
    return [await conn.fetchval(sql, *values.values()) for _ in range(count)]


async def postgres_credential(owner: Owner, url: str, **extra: str) -> str:
    """Create a `postgres` credential for the owner; returns its id."""
    response = await owner.client.post(
        "/api/credentials", json={"provider": "postgres", "name": "app db", "secret": {"url": url, **extra}}
    )
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


def outbox_config(credential_id: str, table: str, **overrides: Any) -> dict[str, Any]:
    """The reference design's trigger config: published rows, scheduled sends, error_details."""
    config: dict[str, Any] = {
        "credential_id": credential_id,
        "table": table,
        "status_column": "notification_status",
        "conditions": [{"column": "publish_status", "op": "equals", "value": "PUBLISH"}],
        "due_column": "scheduled_send_time",
        "updated_column": "updated_at",
        "result_column": "error_details",
        "poll_interval_s": 1,
        "retry": {"interval_s": 1, "max_attempts": 3},
    }
    config.update(overrides)
    return config
