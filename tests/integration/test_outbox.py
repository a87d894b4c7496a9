"""Database outbox: `postgres` credentials and the `postgres.outbox` trigger, end to end against
a second real database on the test server standing in for the owner's own database."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import asyncpg
import httpx
import orjson
import pytest
import respx

from tests.conftest import Owner, Receiver, Stack, wait_for
from tests.faultproxy import FaultProxy
from tests.outbox_support import (
    OWNER_PASSWORD,
    OwnerDb,
    insert_rows,
    make_table,
    outbox_config,
    owner_conn,
    owner_db,
    postgres_credential,
)
from tests.processes import deployment, owner_client

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


# --- end to end: rows -> events -> Novu -> written back ----------------------------------

NOVU_URL = "https://api.novu.co/v1/events/trigger"
FAST_RETRY = {"max_attempts": 1, "initial_interval_s": 0.2, "backoff": 1.0, "max_interval_s": 1}
NOVU_ACTION = {
    "type": "novu.trigger",
    "config": {
        "workflow_id": "order-shipped",
        "to": "{{ trigger.row.recipients }}",
        "payload": {"name": "{{ trigger.row.payload.name }}"},
    },
}


class NovuStandIn:
    """Novu's trigger endpoint: answers with a transaction id per call, refuses on demand."""

    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []
        self.refuse_names: set[str] = set()

    def __call__(self, request: httpx.Request) -> httpx.Response:
        body = orjson.loads(request.content)
        self.calls.append(body)
        name = body.get("payload", {}).get("name")
        if name in self.refuse_names:
            self.refuse_names.discard(name)
            return httpx.Response(400, json={"message": "invalid recipients"})
        return httpx.Response(
            201, json={"data": {"acknowledged": True, "status": "processed", "transactionId": body["transactionId"]}}
        )


@pytest.fixture
def novu() -> Iterator[NovuStandIn]:
    stand_in = NovuStandIn()
    with respx.mock(assert_all_called=False) as mock:
        mock.route(host="127.0.0.1").pass_through()
        mock.post(NOVU_URL).mock(side_effect=stand_in)
        yield stand_in


async def _outbox_workflow(owner: Owner, url: str, table: str, **overrides: Any) -> dict[str, Any]:
    credential = await postgres_credential(owner, url)
    novu_key = await owner.client.post("/api/credentials", json={"provider": "novu", "secret": {"api_key": "k"}})
    action = {**NOVU_ACTION, "credential_id": novu_key.json()["id"]}
    response = await owner.client.post(
        "/api/workflows",
        json={
            "name": "notifications",
            "trigger": {"type": "postgres.outbox", "config": outbox_config(credential, table, **overrides)},
            "action": action,
            "retry_policy": FAST_RETRY,
        },
    )
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created


async def _statuses(conn: asyncpg.Connection, table: str) -> dict[int, str]:
    rows = await conn.fetch(f"SELECT id, notification_status FROM {table} ORDER BY id")
    return {r["id"]: r["notification_status"] for r in rows}


def _all(status: str, ids: list[int]) -> Any:
    async def check(conn: asyncpg.Connection, table: str) -> bool:
        statuses = await _statuses(conn, table)
        return all(statuses[i] == status for i in ids)

    return check


@pytest.mark.usefixtures("pipeline")
async def test_published_rows_are_sent_once_and_marked_sent_with_novus_transaction_ids(
    owner: Owner, owner_db: OwnerDb, owner_conn: asyncpg.Connection, novu: NovuStandIn
) -> None:
    table = "ent_published"
    await make_table(owner_conn, table)
    sent = [
        await owner_conn.fetchval(
            f"INSERT INTO {table} (recipients, payload) VALUES ($1, $2) RETURNING id",
            [f"sub-{n}"],
            f'{{"name": "n{n}"}}',
        )
        for n in range(3)
    ]
    draft = await insert_rows(owner_conn, table, 1, publish_status="DRAFT")
    flow = await _outbox_workflow(owner, owner_db.url, table)

    await wait_for(lambda: _all("SENT", sent)(owner_conn, table))

    assert (await _statuses(owner_conn, table))[draft[0]] == "PENDING"
    assert sorted(c["payload"]["name"] for c in novu.calls) == ["n0", "n1", "n2"]
    assert sorted(c["to"][0] for c in novu.calls) == ["sub-0", "sub-1", "sub-2"]
    details = await owner_conn.fetch(f"SELECT error_details FROM {table} WHERE id = ANY($1)", sent)
    transactions = {orjson.loads(d["error_details"])["transaction_id"] for d in details}
    assert transactions == {c["transactionId"] for c in novu.calls}
    health = (await owner.client.get(f"/api/workflows/{flow['id']}")).json()
    assert health["outbox"]["rows_claimed_total"] == 3 and health["outbox"]["last_error"] is None
    assert health["trigger_sync"]["state"] == "synced"


@pytest.mark.usefixtures("pipeline")
async def test_an_event_shows_the_row_that_produced_it(
    owner: Owner, owner_db: OwnerDb, owner_conn: asyncpg.Connection, novu: NovuStandIn
) -> None:
    table = "ent_shown"
    await make_table(owner_conn, table)
    [row_id] = await insert_rows(owner_conn, table, 1, payload='{"name": "shown"}')
    await _outbox_workflow(owner, owner_db.url, table)
    await wait_for(lambda: _all("SENT", [row_id])(owner_conn, table))

    [event] = (await owner.client.get("/api/events")).json()["items"]
    detail = (await owner.client.get(f"/api/events/{event['id']}")).json()
    assert detail["source_type"] == "outbox"
    assert detail["outbox_row"]["table"] == table and detail["outbox_row"]["row_id"] == str(row_id)
    assert detail["outbox_row"]["generation"] == 1 and detail["outbox_row"]["outcome"] == "sent"
    assert detail["body"]["row"]["payload"] == {"name": "shown"}


@pytest.mark.usefixtures("pipeline")
async def test_a_failed_row_is_retried_and_then_sent(
    owner: Owner, owner_db: OwnerDb, owner_conn: asyncpg.Connection, novu: NovuStandIn
) -> None:
    table = "ent_retry"
    await make_table(owner_conn, table)
    novu.refuse_names.add("flaky")
    [row_id] = await insert_rows(owner_conn, table, 1, payload='{"name": "flaky"}')
    await _outbox_workflow(owner, owner_db.url, table)

    await wait_for(lambda: _all("SENT", [row_id])(owner_conn, table), timeout=30)

    assert [c["payload"]["name"] for c in novu.calls] == ["flaky", "flaky"]
    details = orjson.loads(await owner_conn.fetchval(f"SELECT error_details FROM {table} WHERE id = $1", row_id))
    assert details["transaction_id"] == novu.calls[-1]["transactionId"]
    generations = await _claims(owner, row_id)
    assert generations == [(1, "failed"), (2, "sent")]


async def _claims(owner: Owner, row_id: int) -> list[tuple[int, str]]:
    events = (await owner.client.get("/api/events")).json()["items"]
    found = []
    for event in events:
        row = (await owner.client.get(f"/api/events/{event['id']}")).json()["outbox_row"]
        if row is not None and row["row_id"] == str(row_id):
            found.append((row["generation"], row["outcome"]))
    return sorted(found)


@pytest.mark.usefixtures("pipeline")
async def test_a_scheduled_row_runs_only_when_due(
    owner: Owner, owner_db: OwnerDb, owner_conn: asyncpg.Connection, novu: NovuStandIn
) -> None:
    table = "ent_scheduled"
    await make_table(owner_conn, table)
    [later] = await owner_conn.fetch(
        f'INSERT INTO {table} (payload, scheduled_send_time) VALUES (\'{{"name": "later"}}\', '
        "now() + interval '4 seconds') RETURNING id, scheduled_send_time"
    )
    [now] = await insert_rows(owner_conn, table, 1, payload='{"name": "now"}')
    await _outbox_workflow(owner, owner_db.url, table)

    await wait_for(lambda: _all("SENT", [now])(owner_conn, table))
    assert (await _statuses(owner_conn, table))[later["id"]] == "PENDING"
    await wait_for(lambda: _all("SENT", [later["id"]])(owner_conn, table))
    sent_at = await owner_conn.fetchval(f"SELECT updated_at FROM {table} WHERE id = $1", later["id"])
    assert sent_at >= later["scheduled_send_time"]


@pytest.mark.usefixtures("pipeline")
async def test_a_missing_table_is_a_clear_trigger_sync_error_and_others_still_run(
    owner: Owner, owner_db: OwnerDb, owner_conn: asyncpg.Connection, novu: NovuStandIn
) -> None:
    broken = await _outbox_workflow(owner, owner_db.url, "no_such_table")
    table = "ent_beside_broken"
    await make_table(owner_conn, table)
    [row_id] = await insert_rows(owner_conn, table, 1, payload='{"name": "beside"}')
    await _outbox_workflow(owner, owner_db.url, table)

    async def sync_error() -> Any:
        view = (await owner.client.get(f"/api/workflows/{broken['id']}")).json()
        return view["trigger_sync"]["error"]

    error = await wait_for(sync_error)
    assert "no_such_table" in error and "does not exist" in error
    await wait_for(lambda: _all("SENT", [row_id])(owner_conn, table))


@pytest.mark.usefixtures("pipeline")
async def test_a_missing_column_is_a_clear_trigger_sync_error(
    owner: Owner, owner_db: OwnerDb, owner_conn: asyncpg.Connection
) -> None:
    table = "ent_missing_column"
    await make_table(owner_conn, table)
    flow = await _outbox_workflow(owner, owner_db.url, table, due_column="send_at")

    async def sync_error() -> Any:
        view = (await owner.client.get(f"/api/workflows/{flow['id']}")).json()
        return view["trigger_sync"]["error"]

    error = await wait_for(sync_error)
    assert "send_at" in error and "does not exist" in error
    assert OWNER_PASSWORD not in error


@pytest.mark.usefixtures("pipeline")
async def test_the_owners_database_down_backs_off_and_loses_nothing(
    owner: Owner, owner_db: OwnerDb, owner_conn: asyncpg.Connection, novu: NovuStandIn, caplog: pytest.LogCaptureFixture
) -> None:
    table = "ent_outage"
    await make_table(owner_conn, table)
    proxy = FaultProxy(owner_db.host, owner_db.port)
    await proxy.start()
    try:
        url = f"postgresql://outbox_app:{OWNER_PASSWORD}@127.0.0.1:{proxy.port}/owner_outbox"
        flow = await _outbox_workflow(owner, url, table)
        proxy.refusing = True
        proxy.cut()
        ids = await insert_rows(owner_conn, table, 3, payload='{"name": "later"}')

        async def poll_error() -> Any:
            outbox = (await owner.client.get(f"/api/workflows/{flow['id']}")).json()["outbox"]
            return outbox and outbox["last_error"]

        error = await wait_for(poll_error)
        assert "cannot connect" in error or "timed out" in error
        assert OWNER_PASSWORD not in error
        assert set((await _statuses(owner_conn, table)).values()) == {"PENDING"}
        proxy.refusing = False
        await wait_for(lambda: _all("SENT", ids)(owner_conn, table), timeout=90)
        assert len(novu.calls) == 3
        assert "outbox poll of workflow" in caplog.text and OWNER_PASSWORD not in caplog.text
    finally:
        await proxy.close()


@pytest.mark.usefixtures("pipeline")
async def test_a_notify_on_the_listen_channel_polls_at_once(
    owner: Owner, owner_db: OwnerDb, owner_conn: asyncpg.Connection, novu: NovuStandIn
) -> None:
    table = "ent_listen"
    await make_table(owner_conn, table)
    flow = await _outbox_workflow(owner, owner_db.url, table, poll_interval_s=600, listen_channel="ent_listen_wake")

    async def polled_once() -> Any:
        return (await owner.client.get(f"/api/workflows/{flow['id']}")).json()["outbox"]

    await wait_for(polled_once)
    [row_id] = await insert_rows(owner_conn, table, 1, payload='{"name": "woken"}')

    async def notified_and_sent() -> bool:
        # Notified until seen: the listener connects after the workflow's first poll.
        await owner_conn.execute("SELECT pg_notify('ent_listen_wake', '')")
        sent: bool = await _all("SENT", [row_id])(owner_conn, table)
        return sent

    await wait_for(notified_and_sent, timeout=15, interval=0.5)


# --- crashes of real processes --------------------------------------------------------------


async def test_two_dispatchers_one_killed_with_the_worker_mid_flight_send_each_row_once(
    stack: Stack, owner_db: OwnerDb, owner_conn: asyncpg.Connection, receiver: Receiver
) -> None:
    table = "ent_killed"
    await make_table(owner_conn, table)
    await owner_conn.execute(f"INSERT INTO {table} (payload) SELECT '{{}}' FROM generate_series(1, 200)")
    ids = [r["id"] for r in await owner_conn.fetch(f"SELECT id FROM {table}")]
    path = f"/outbox-killed-{uuid.uuid4().hex[:8]}"
    async with deployment(stack) as deploy:
        # Two dispatcher replicas poll the same outbox; one of them is killed mid-flight.
        api, dispatcher, worker = await deploy.start("serve"), deploy.spawn("dispatch"), deploy.spawn("worker")
        await deploy.started(dispatcher, worker, deploy.spawn("dispatch"))
        async with await owner_client(deploy, api[0]) as client:
            credential = (
                await client.post("/api/credentials", json={"provider": "postgres", "secret": {"url": owner_db.url}})
            ).json()["id"]
            response = await client.post(
                "/api/workflows",
                json={
                    "name": "killed",
                    "trigger": {
                        "type": "postgres.outbox",
                        "config": outbox_config(credential, table, batch_size=20),
                    },
                    "action": {
                        "type": "http.request",
                        "config": {"url": receiver.url + path, "body": {"row": "{{ trigger.row.id }}"}},
                    },
                },
            )
            assert response.status_code == 201, response.text

            async def some_claimed() -> bool:
                return len(receiver.to(path)) >= 20

            await wait_for(some_claimed, timeout=60)
            dispatcher.kill()
            worker.kill()
            await deploy.started(deploy.spawn("dispatch"), deploy.spawn("worker"))
            await wait_for(lambda: _all("SENT", ids)(owner_conn, table), timeout=150, interval=0.5)
            claims = await deploy.pool.fetch("SELECT row_id, count(*) AS n FROM outbox_claims GROUP BY row_id")

    # Each row claimed once: no generation was lost or doubled by the kill.
    assert len(claims) == len(ids) and all(c["n"] == 1 for c in claims)
    keys: dict[int, set[str]] = {}
    for request in receiver.to(path):
        keys.setdefault(orjson.loads(request.body)["row"], set()).add(request.headers["idempotency-key"])
    # One execution per row (an attempt cut off by the kill may be sent again under the same key).
    assert sorted(keys) == sorted(ids) and all(len(k) == 1 for k in keys.values())


@pytest.mark.usefixtures("pipeline")
async def test_a_fixed_config_is_polled_at_once_and_clears_the_error(
    owner: Owner, owner_db: OwnerDb, owner_conn: asyncpg.Connection, novu: NovuStandIn
) -> None:
    table = "ent_fixed_config"
    await make_table(owner_conn, table)
    [row_id] = await insert_rows(owner_conn, table, 1, payload='{"name": "fixed"}')
    flow = await _outbox_workflow(owner, owner_db.url, table, due_column="send_at", poll_interval_s=600)

    async def sync() -> Any:
        return (await owner.client.get(f"/api/workflows/{flow['id']}")).json()["trigger_sync"]

    await wait_for(lambda: _state(sync, "error"))
    config = {k: v for k, v in flow["trigger"]["config"].items() if k != "due_column"}
    patched = await owner.client.patch(
        f"/api/workflows/{flow['id']}", json={"trigger": {"type": "postgres.outbox", "config": config}}
    )
    assert patched.status_code == 200, patched.text

    await wait_for(lambda: _all("SENT", [row_id])(owner_conn, table))
    await wait_for(lambda: _state(sync, "synced"))


async def _state(sync: Any, wanted: str) -> bool:
    state: dict[str, Any] = await sync()
    return state["state"] == wanted
