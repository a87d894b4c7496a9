"""Database outbox: `postgres` credentials and the `postgres.outbox` trigger, end to end against
a second real database on the test server standing in for the owner's own database."""

from __future__ import annotations

from typing import Any

import asyncpg
import pytest

from tests.conftest import Owner, Stack
from tests.outbox_support import (
    OWNER_PASSWORD,
    OwnerDb,
    make_table,
    outbox_config,
    owner_conn,
    owner_db,
    postgres_credential,
)

__all__ = ["owner_conn", "owner_db"]  # fixtures


async def _workflow(owner: Owner, config: dict[str, Any], action: dict[str, Any] | None = None) -> Any:
    return await owner.client.post(
        "/api/workflows",
        json={
            "name": "outbox",
            "trigger": {"type": "postgres.outbox", "config": config},
            "action": action or {"type": "http.request", "config": {"url": "http://127.0.0.1:9/x"}},
        },
    )


# --- credentials ---------------------------------------------------------------------------


async def test_a_postgres_credential_is_stored_once_a_connection_works(
    owner: Owner, owner_db: OwnerDb, pool: asyncpg.Pool
) -> None:
    response = await owner.client.post(
        "/api/credentials", json={"provider": "postgres", "secret": {"url": owner_db.url}}
    )
    assert response.status_code == 201, response.text
    assert response.json()["provider"] == "postgres"
    assert OWNER_PASSWORD not in response.text
    stored = await pool.fetchval("SELECT secret FROM credentials WHERE id = $1::uuid", response.json()["id"])
    assert OWNER_PASSWORD not in stored


async def test_an_unreachable_database_is_refused_without_echoing_the_password(
    owner: Owner, owner_db: OwnerDb, pool: asyncpg.Pool
) -> None:
    url = f"postgresql://someone:{OWNER_PASSWORD}@127.0.0.1:9/app"
    response = await owner.client.post("/api/credentials", json={"provider": "postgres", "secret": {"url": url}})
    assert response.status_code == 422
    error = response.json()["error"]
    assert error["field"] == "secret.url" and "cannot connect" in error["message"]
    assert OWNER_PASSWORD not in response.text
    assert await pool.fetchval("SELECT count(*) FROM credentials WHERE owner_id = $1::uuid", owner.id) == 0


async def test_a_missing_database_is_named(owner: Owner, owner_db: OwnerDb) -> None:
    url = f"postgresql://postgres:{OWNER_PASSWORD}@{owner_db.host}:{owner_db.port}/no_such_db"
    response = await owner.client.post("/api/credentials", json={"provider": "postgres", "secret": {"url": url}})
    assert response.status_code == 422
    assert "database 'no_such_db' does not exist" in response.json()["error"]["message"]
    assert OWNER_PASSWORD not in response.text


async def test_hookyards_own_database_is_refused(owner: Owner, stack: Stack, owner_db: OwnerDb) -> None:
    url = f"postgresql://postgres:{OWNER_PASSWORD}@{owner_db.host}:{owner_db.port}/postgres"
    response = await owner.client.post("/api/credentials", json={"provider": "postgres", "secret": {"url": url}})
    assert response.status_code == 422
    assert "hookyard's own database" in response.json()["error"]["message"]


async def test_a_private_address_is_refused_by_the_egress_policy(owner: Owner) -> None:
    url = f"postgresql://app:{OWNER_PASSWORD}@10.1.2.3:5432/app"
    response = await owner.client.post("/api/credentials", json={"provider": "postgres", "secret": {"url": url}})
    assert response.status_code == 422
    message = response.json()["error"]["message"]
    assert "egress refused" in message and "private address" in message
    assert OWNER_PASSWORD not in response.text


@pytest.mark.parametrize(
    ("secret", "field"),
    [
        ({"url": "mysql://u:p@h/db"}, "secret.url"),
        ({"url": "postgresql://u:p@h/db?host=/var/run/postgresql"}, "secret.url"),
        ({"url": "postgresql://u:p@%2Fvar%2Frun/db"}, "secret.url"),
        ({"url": "postgresql://u:p@h/db", "sslmode": "sometimes"}, "secret.sslmode"),
        ({"url": "postgresql://u:p@h/db", "ssl_root_cert": "not a pem"}, "secret.ssl_root_cert"),
        ({"url": "postgresql://u:p@h/db", "token": "x"}, "secret"),
    ],
)
async def test_an_unusable_postgres_secret_is_refused_by_field(
    owner: Owner, secret: dict[str, str], field: str
) -> None:
    response = await owner.client.post("/api/credentials", json={"provider": "postgres", "secret": secret})
    assert response.status_code == 422
    assert response.json()["error"]["field"] == field
    assert ":p@" not in response.text


# --- workflow definitions ------------------------------------------------------------------


async def test_an_outbox_workflow_is_created_on_the_owners_credential(owner: Owner, owner_db: OwnerDb) -> None:
    credential = await postgres_credential(owner, owner_db.url)
    response = await _workflow(owner, outbox_config(credential, "public.ent_notification"))
    assert response.status_code == 201, response.text


async def test_an_owner_cannot_use_another_owners_database_credential(
    owner: Owner, other_owner: Owner, owner_db: OwnerDb
) -> None:
    theirs = await postgres_credential(other_owner, owner_db.url)
    response = await _workflow(owner, outbox_config(theirs, "ent_notification"))
    assert response.status_code == 422
    assert response.json()["error"] == {
        "code": "invalid",
        "message": "trigger.config.credential_id: no such credential",
        "field": "trigger.config.credential_id",
    }


async def test_an_outbox_needs_a_postgres_credential(owner: Owner) -> None:
    novu = (await owner.client.post("/api/credentials", json={"provider": "novu", "secret": {"api_key": "k"}})).json()
    response = await _workflow(owner, outbox_config(novu["id"], "ent_notification"))
    assert response.status_code == 422
    assert "credential is for novu; this needs postgres" in response.json()["error"]["message"]


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"table": 'ent"; DROP TABLE x; --'}, "trigger.config.table"),
        ({"table": "a.b.c"}, "trigger.config.table"),
        ({"status_column": "status; --"}, "trigger.config.status_column"),
        ({"conditions": [{"column": "publish_status", "op": "matches", "value": "x"}]}, "trigger.config.conditions"),
        ({"conditions": [{"column": "a", "op": "exists", "value": 1}]}, "trigger.config.conditions[0].value"),
        ({"conditions": [{"column": "a", "op": "in", "value": "x"}]}, "trigger.config.conditions[0].value"),
        ({"batch_size": 5000}, "trigger.config.batch_size"),
        ({"poll_interval_s": 0.1}, "trigger.config.poll_interval_s"),
        ({"statuses": {"sent": "PENDING"}}, "trigger.config.statuses"),
    ],
)
async def test_an_unusable_outbox_config_is_refused_by_field(
    owner: Owner, owner_db: OwnerDb, change: dict[str, Any], field: str
) -> None:
    credential = await postgres_credential(owner, owner_db.url)
    response = await _workflow(owner, {**outbox_config(credential, "ent_notification"), **change})
    assert response.status_code == 422, response.text
    assert response.json()["error"]["field"].startswith(field), response.json()


async def test_a_credential_an_outbox_reads_cannot_be_deleted(
    owner: Owner, owner_db: OwnerDb, owner_conn: asyncpg.Connection
) -> None:
    await make_table(owner_conn, "ent_delete_guard")
    credential = await postgres_credential(owner, owner_db.url)
    assert (await _workflow(owner, outbox_config(credential, "ent_delete_guard"))).status_code == 201
    response = await owner.client.delete(f"/api/credentials/{credential}")
    assert response.status_code == 409
