"""Database outbox under crashes, races, outages and hostile configs.

The poller's steps are called one by one, so each crash point of the protocol
(docs/architecture.md, "Database outbox") is taken exactly: a crash is an exception that
rolls back whatever transaction was open at that point, as a killed process's would be.
No dispatcher runs in this module, except the resolve step called explicitly.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any
from uuid import UUID

import asyncpg
import orjson
import pytest

from oauth.crypto import Keyring
from schemas.outbox_sql import compile_outbox
from schemas.store import outbox as store
from settings import Settings
from tests.conftest import Owner, Stack, make_settings
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
from worker.dispatch.dispatcher import Dispatcher
from worker.dispatch.outbox import OutboxPoller, lock_due, write_row

__all__ = ["owner_conn", "owner_db"]  # fixtures

pytestmark = pytest.mark.integration


class Crash(Exception):
    """A process dying at this point: the open transaction is rolled back."""


@pytest.fixture
async def poller(pool: asyncpg.Pool, settings: Settings, keyring: Keyring) -> AsyncIterator[OutboxPoller]:
    p = OutboxPoller(pool, settings, keyring)
    yield p
    await p.pools.close()


async def _workflow(owner: Owner, url: str, table: str, **overrides: Any) -> store.OutboxPoll:
    credential = await postgres_credential(owner, url)
    config = {k: v for k, v in outbox_config(credential, table, **overrides).items() if v is not None}
    response = await owner.client.post(
        "/api/workflows",
        json={
            "name": "outbox",
            "trigger": {"type": "postgres.outbox", "config": config},
            "action": {"type": "http.request", "config": {"url": "http://127.0.0.1:9/x"}},
        },
    )
    assert response.status_code == 201, response.text
    body = response.json()
    return store.OutboxPoll(UUID(body["id"]), UUID(owner.id), body["trigger"]["config"], True, 0)


async def _statuses(conn: asyncpg.Connection, table: str) -> list[str]:
    return [r["notification_status"] for r in await conn.fetch(f"SELECT notification_status FROM {table} ORDER BY id")]


async def _events(pool: asyncpg.Pool, poll: store.OutboxPoll) -> int:
    count: int = await pool.fetchval(
        "SELECT count(*) FROM events WHERE source_type = 'outbox' AND source_id = $1", str(poll.workflow_id)
    )
    return count


async def _claims(pool: asyncpg.Pool, poll: store.OutboxPoll) -> list[tuple[str, int, str]]:
    rows = await pool.fetch(
        "SELECT row_id, generation, state FROM outbox_claims WHERE workflow_id = $1 "
        "ORDER BY row_id::bigint, generation",
        poll.workflow_id,
    )
    return [(r["row_id"], r["generation"], r["state"]) for r in rows]


async def _finish_executions(pool: asyncpg.Pool, settings: Settings, poll: store.OutboxPoll, status: str) -> None:
    """Resolve the workflow's events (the dispatcher's real step) and end their executions as a worker would."""
    await Dispatcher(pool, settings).resolve_once()
    await pool.execute(
        "UPDATE executions SET status = $2, result = $3::jsonb, error = $4, finished_at = now() "
        "WHERE workflow_id = $1 AND status IN ('queued', 'running')",
        poll.workflow_id,
        status,
        {"transaction_id": "tx-1"} if status == "succeeded" else None,
        None if status == "succeeded" else "Novu rejected the trigger (400)",
    )


async def _claim_in_steps(poller: OutboxPoller, poll: store.OutboxPoll, *, crash_after_store: bool) -> None:
    """The claim transaction on the owner's side, crashing before or after hookyard's commit."""
    sql = compile_outbox(poll.trigger_config)
    opool = await poller.owner_pool(poll.owner_id, poll.trigger_config)
    with pytest.raises(Crash):
        async with opool.acquire() as oconn, oconn.transaction():
            records = await lock_due(oconn, sql, [], 1 << 20)
            assert records
            if crash_after_store:
                await poller.store_claims(poll, records)
            raise Crash


# --- crash points of the claim ------------------------------------------------------------


async def test_a_crash_before_hookyard_commits_leaves_the_rows_due_and_nothing_stored(
    owner: Owner, owner_db: OwnerDb, owner_conn: asyncpg.Connection, pool: asyncpg.Pool, poller: OutboxPoller
) -> None:
    await make_table(owner_conn, "hx_crash_before")
    await insert_rows(owner_conn, "hx_crash_before", 3)
    poll = await _workflow(owner, owner_db.url, "hx_crash_before")

    await _claim_in_steps(poller, poll, crash_after_store=False)
    assert await _statuses(owner_conn, "hx_crash_before") == ["PENDING"] * 3
    assert await _events(pool, poll) == 0 and await _claims(pool, poll) == []

    assert await poller.claim(poll, compile_outbox(poll.trigger_config), await _opool(poller, poll)) == 3
    assert await _statuses(owner_conn, "hx_crash_before") == ["PROCESSING"] * 3
    assert await _events(pool, poll) == 3


async def _opool(poller: OutboxPoller, poll: store.OutboxPoll) -> asyncpg.Pool:
    return await poller.owner_pool(poll.owner_id, poll.trigger_config)


async def test_a_crash_after_hookyard_commits_runs_each_row_once_and_writes_it_back(
    owner: Owner,
    owner_db: OwnerDb,
    owner_conn: asyncpg.Connection,
    pool: asyncpg.Pool,
    poller: OutboxPoller,
    settings: Settings,
) -> None:
    await make_table(owner_conn, "hx_crash_after")
    await insert_rows(owner_conn, "hx_crash_after", 3)
    poll = await _workflow(owner, owner_db.url, "hx_crash_after")

    await _claim_in_steps(poller, poll, crash_after_store=True)
    # The owner's side rolled back: rows are still PENDING, but hookyard holds their claims.
    assert await _statuses(owner_conn, "hx_crash_after") == ["PENDING"] * 3
    assert [c[1:] for c in await _claims(pool, poll)] == [(1, "claimed")] * 3
    # The next poll sees them due and skips them: no second claim, no second event.
    assert await poller.claim(poll, compile_outbox(poll.trigger_config), await _opool(poller, poll)) == 0
    assert await _events(pool, poll) == 3

    await _finish_executions(pool, settings, poll, "succeeded")
    assert await poller.write_back_all() == 3
    assert await _statuses(owner_conn, "hx_crash_after") == ["SENT"] * 3
    details = await owner_conn.fetch("SELECT error_details FROM hx_crash_after")
    assert all(orjson.loads(d["error_details"]) == {"transaction_id": "tx-1"} for d in details)
    assert [c[1:] for c in await _claims(pool, poll)] == [(1, "written_back")] * 3


async def test_a_crash_between_the_owners_write_and_closing_the_claim_writes_the_row_once(
    owner: Owner,
    owner_db: OwnerDb,
    owner_conn: asyncpg.Connection,
    pool: asyncpg.Pool,
    poller: OutboxPoller,
    settings: Settings,
) -> None:
    await make_table(owner_conn, "hx_crash_writeback")
    [row_id] = await insert_rows(owner_conn, "hx_crash_writeback", 1)
    poll = await _workflow(owner, owner_db.url, "hx_crash_writeback")
    sql = compile_outbox(poll.trigger_config)
    assert await poller.claim(poll, sql, await _opool(poller, poll)) == 1
    await _finish_executions(pool, settings, poll, "succeeded")

    with pytest.raises(Crash):
        async with pool.acquire() as conn, conn.transaction():
            [claim] = await store.lock_finished(conn, poll.workflow_id, 10)
            async with (await _opool(poller, poll)).acquire() as oconn:
                assert await write_row(oconn, sql, claim.row_id, "SENT", {"transaction_id": "tx-1"})
            raise Crash
    written_at = await owner_conn.fetchval("SELECT updated_at FROM hx_crash_writeback WHERE id = $1", row_id)
    assert [c[2] for c in await _claims(pool, poll)] == ["claimed"]

    assert await poller.write_back_all() == 1
    assert await _statuses(owner_conn, "hx_crash_writeback") == ["SENT"]
    # The repeated write found the row SENT and changed nothing.
    assert await owner_conn.fetchval("SELECT updated_at FROM hx_crash_writeback WHERE id = $1", row_id) == written_at
    assert [c[2] for c in await _claims(pool, poll)] == ["written_back"]


async def test_a_stale_write_back_cannot_close_a_newer_claim(
    owner: Owner,
    owner_db: OwnerDb,
    owner_conn: asyncpg.Connection,
    pool: asyncpg.Pool,
    poller: OutboxPoller,
    settings: Settings,
) -> None:
    await make_table(owner_conn, "hx_stale")
    await insert_rows(owner_conn, "hx_stale", 1)
    poll = await _workflow(owner, owner_db.url, "hx_stale", retry={"interval_s": 1, "max_attempts": 3})
    sql = compile_outbox(poll.trigger_config)
    assert await poller.claim(poll, sql, await _opool(poller, poll)) == 1
    await _finish_executions(pool, settings, poll, "failed")
    async with pool.acquire() as conn:
        [first] = await store.lock_finished(conn, poll.workflow_id, 10)
    assert await poller.write_back_all() == 1
    assert await _statuses(owner_conn, "hx_stale") == ["FAILED"]
    await owner_conn.execute("UPDATE hx_stale SET updated_at = now() - interval '1 hour'")
    await pool.execute(
        "UPDATE outbox_claims SET written_back_at = now() - interval '1 hour' WHERE workflow_id = $1",
        poll.workflow_id,
    )
    assert await poller.claim(poll, sql, await _opool(poller, poll)) == 1

    async with pool.acquire() as conn:
        assert await store.record_written_many(conn, poll.workflow_id, [first], [{"late": True}]) == 0
    assert [c[1:] for c in await _claims(pool, poll)] == [(1, "written_back"), (2, "claimed")]
    assert await _statuses(owner_conn, "hx_stale") == ["PROCESSING"]


# --- races and leases -----------------------------------------------------------------------


async def test_two_pollers_never_claim_the_same_row(
    owner: Owner,
    owner_db: OwnerDb,
    owner_conn: asyncpg.Connection,
    pool: asyncpg.Pool,
    settings: Settings,
    keyring: Keyring,
) -> None:
    table = "hx_race"
    await make_table(owner_conn, table)
    await owner_conn.execute(f"INSERT INTO {table} (payload) SELECT '{{}}' FROM generate_series(1, 300)")
    # Two workflows (two credentials) on one table, each polled by both replicas at once.
    polls = [await _workflow(owner, owner_db.url, table, batch_size=25) for _ in range(2)]
    replicas = [OutboxPoller(pool, settings, keyring) for _ in range(2)]
    try:
        sql = compile_outbox(polls[0].trigger_config)
        claimed = 1
        while claimed:
            rounds = [replica.claim(poll, sql, await _opool(replica, poll)) for replica in replicas for poll in polls]
            claimed = sum(await asyncio.gather(*rounds))
    finally:
        for replica in replicas:
            await replica.pools.close()

    claims = await pool.fetch(
        "SELECT row_id, count(*) AS n FROM outbox_claims WHERE table_name = $1 AND workflow_id = ANY($2::uuid[]) "
        "GROUP BY row_id",
        table,
        [p.workflow_id for p in polls],
    )
    assert len(claims) == 300 and all(c["n"] == 1 for c in claims)
    assert sum([await _events(pool, p) for p in polls]) == 300
    assert set(await _statuses(owner_conn, table)) == {"PROCESSING"}


async def test_a_row_left_processing_past_its_lease_is_claimed_again(
    owner: Owner, owner_db: OwnerDb, owner_conn: asyncpg.Connection, pool: asyncpg.Pool, poller: OutboxPoller
) -> None:
    table = "hx_lease"
    await make_table(owner_conn, table)
    [stuck] = await insert_rows(owner_conn, table, 1, notification_status="PROCESSING")
    [busy] = await insert_rows(owner_conn, table, 1, notification_status="PROCESSING")
    await owner_conn.execute(f"UPDATE {table} SET updated_at = now() - interval '1 hour' WHERE id = $1", stuck)
    poll = await _workflow(owner, owner_db.url, table, lease_timeout_s=60)

    assert await poller.claim(poll, compile_outbox(poll.trigger_config), await _opool(poller, poll)) == 1
    [claim] = await pool.fetch(
        "SELECT row_id, claimed_from FROM outbox_claims WHERE workflow_id = $1", poll.workflow_id
    )
    assert claim["row_id"] == str(stuck) and claim["claimed_from"] == "PROCESSING"
    assert busy != stuck


async def test_a_failed_row_is_not_retried_beyond_max_attempts(
    owner: Owner,
    owner_db: OwnerDb,
    owner_conn: asyncpg.Connection,
    pool: asyncpg.Pool,
    poller: OutboxPoller,
    settings: Settings,
) -> None:
    table = "hx_exhausted"
    await make_table(owner_conn, table)
    await insert_rows(owner_conn, table, 1)
    poll = await _workflow(owner, owner_db.url, table, retry={"interval_s": 1, "max_attempts": 2})
    sql = compile_outbox(poll.trigger_config)
    for _ in range(2):
        await owner_conn.execute(f"UPDATE {table} SET updated_at = now() - interval '1 hour'")
        await pool.execute(
            "UPDATE outbox_claims SET written_back_at = now() - interval '1 hour' WHERE workflow_id = $1",
            poll.workflow_id,
        )
        assert await poller.claim(poll, sql, await _opool(poller, poll)) == 1
        await _finish_executions(pool, settings, poll, "failed")
        assert await poller.write_back_all() == 1
    await owner_conn.execute(f"UPDATE {table} SET updated_at = now() - interval '1 hour'")
    await pool.execute(
        "UPDATE outbox_claims SET written_back_at = now() - interval '1 hour' WHERE workflow_id = $1", poll.workflow_id
    )
    assert await poller.claim(poll, sql, await _opool(poller, poll)) == 0
    assert await _statuses(owner_conn, table) == ["FAILED"]
    details = orjson.loads(await owner_conn.fetchval(f"SELECT error_details FROM {table}"))
    assert details["error"] == "Novu rejected the trigger (400)"


# --- outages and hostile owners ---------------------------------------------------------------


async def test_a_write_back_is_retried_while_the_owners_database_is_down(
    owner: Owner,
    owner_db: OwnerDb,
    owner_conn: asyncpg.Connection,
    pool: asyncpg.Pool,
    poller: OutboxPoller,
    settings: Settings,
) -> None:
    table = "hx_writeback_outage"
    await make_table(owner_conn, table)
    await insert_rows(owner_conn, table, 2)
    proxy = FaultProxy(owner_db.host, owner_db.port)
    await proxy.start()
    try:
        url = f"postgresql://outbox_app:{OWNER_PASSWORD}@127.0.0.1:{proxy.port}/owner_outbox"
        poll = await _workflow(owner, url, table)
        assert await poller.claim(poll, compile_outbox(poll.trigger_config), await _opool(poller, poll)) == 2
        await _finish_executions(pool, settings, poll, "succeeded")
        proxy.refusing = True
        proxy.cut()
        await poller.pools.close()

        assert await poller.write_back_all() == 0
        errors = await pool.fetch(
            "SELECT writeback_attempts, writeback_error FROM outbox_claims WHERE workflow_id = $1", poll.workflow_id
        )
        assert all(e["writeback_attempts"] == 1 and "cannot connect" in e["writeback_error"] for e in errors)
        assert OWNER_PASSWORD not in str([e["writeback_error"] for e in errors])
        assert await _statuses(owner_conn, table) == ["PROCESSING"] * 2

        proxy.refusing = False
        await pool.execute(
            "UPDATE outbox_claims SET writeback_retry_at = now() WHERE workflow_id = $1", poll.workflow_id
        )
        assert await poller.write_back_all() == 2
        assert await _statuses(owner_conn, table) == ["SENT"] * 2
    finally:
        await proxy.close()


async def test_a_condition_value_is_bound_never_spliced_into_sql(
    owner: Owner, owner_db: OwnerDb, owner_conn: asyncpg.Connection, pool: asyncpg.Pool, poller: OutboxPoller
) -> None:
    table = "hx_injection"
    await make_table(owner_conn, table)
    await insert_rows(owner_conn, table, 2)
    hostile = [{"column": "publish_status", "op": "equals", "value": "x' OR '1'='1"}]
    poll = await _workflow(owner, owner_db.url, table, conditions=hostile)

    assert await poller.claim(poll, compile_outbox(poll.trigger_config), await _opool(poller, poll)) == 0
    assert await _statuses(owner_conn, table) == ["PENDING"] * 2


async def test_a_locked_owner_table_costs_a_bounded_time_and_is_reported(
    owner: Owner, owner_db: OwnerDb, owner_conn: asyncpg.Connection, pool: asyncpg.Pool, stack: Stack, keyring: Keyring
) -> None:
    table = "hx_locked"
    await make_table(owner_conn, table)
    await insert_rows(owner_conn, table, 1)
    poll = await _workflow(owner, owner_db.url, table)
    quick = OutboxPoller(pool, make_settings(stack, owner_db_statement_timeout_s=0.5), keyring)
    await pool.execute("INSERT INTO outbox_health (workflow_id) VALUES ($1) ON CONFLICT DO NOTHING", poll.workflow_id)
    try:
        async with owner_conn.transaction():
            await owner_conn.execute(f"LOCK TABLE {table} IN ACCESS EXCLUSIVE MODE")
            started = asyncio.get_running_loop().time()
            assert await quick.poll_bounded(poll) == 0
            assert asyncio.get_running_loop().time() - started < 5
    finally:
        await quick.pools.close()
    error = await pool.fetchval("SELECT last_error FROM outbox_health WHERE workflow_id = $1", poll.workflow_id)
    assert "cancel" in error or "lock" in error, error


async def test_mixed_case_and_dollar_identifiers_reach_exactly_the_named_table_and_columns(
    owner: Owner, owner_db: OwnerDb, owner_conn: asyncpg.Connection, pool: asyncpg.Pool, poller: OutboxPoller
) -> None:
    await owner_conn.execute('DROP TABLE IF EXISTS "Odd$Outbox"')
    await owner_conn.execute(
        'CREATE TABLE "Odd$Outbox" ("Id$1" bigserial PRIMARY KEY, "State$1" text NOT NULL DEFAULT \'PENDING\', '
        "\"Kind\" text NOT NULL DEFAULT 'a')"
    )
    await owner_conn.execute("INSERT INTO \"Odd$Outbox\" (\"Kind\") VALUES ('a'), ('b')")
    poll = await _workflow(
        owner,
        owner_db.url,
        "Odd$Outbox",
        id_column="Id$1",
        status_column="State$1",
        conditions=[{"column": "Kind", "op": "in", "value": ["b"]}],
        due_column=None,
        updated_column=None,
        result_column=None,
    )

    assert await poller.claim(poll, compile_outbox(poll.trigger_config), await _opool(poller, poll)) == 1
    states = await owner_conn.fetch('SELECT "Kind", "State$1" FROM "Odd$Outbox" ORDER BY "Id$1"')
    assert [(r["Kind"], r["State$1"]) for r in states] == [("a", "PENDING"), ("b", "PROCESSING")]


async def test_a_row_too_large_to_carry_is_marked_failed_and_never_fetched_whole(
    owner: Owner, owner_db: OwnerDb, owner_conn: asyncpg.Connection, pool: asyncpg.Pool, stack: Stack, keyring: Keyring
) -> None:
    table = "hx_too_large"
    await make_table(owner_conn, table)
    [small] = await insert_rows(owner_conn, table, 1)
    [large] = await insert_rows(owner_conn, table, 1, payload=orjson.dumps({"blob": "x" * 5000}).decode())
    poll = await _workflow(owner, owner_db.url, table)
    small_rows = OutboxPoller(pool, make_settings(stack, outbox_max_row_bytes=2000), keyring)
    try:
        sql = compile_outbox(poll.trigger_config)
        assert await small_rows.claim(poll, sql, await small_rows.owner_pool(poll.owner_id, poll.trigger_config)) == 1
    finally:
        await small_rows.pools.close()

    rows = {r["id"]: r for r in await owner_conn.fetch(f"SELECT id, notification_status, error_details FROM {table}")}
    assert rows[small]["notification_status"] == "PROCESSING"
    assert rows[large]["notification_status"] == "FAILED"
    assert orjson.loads(rows[large]["error_details"]) == {"error": "row exceeds 2000 bytes as JSON"}
    assert await _events(pool, poll) == 1
    outcome = await pool.fetchval(
        "SELECT outcome FROM outbox_claims WHERE workflow_id = $1 AND row_id = $2", poll.workflow_id, str(large)
    )
    assert outcome == "failed"


async def test_rows_claimed_before_a_deactivation_are_put_back_to_pending(
    owner: Owner,
    owner_db: OwnerDb,
    owner_conn: asyncpg.Connection,
    pool: asyncpg.Pool,
    poller: OutboxPoller,
    settings: Settings,
) -> None:
    table = "hx_deactivated"
    await make_table(owner_conn, table)
    await insert_rows(owner_conn, table, 2)
    poll = await _workflow(owner, owner_db.url, table)
    assert await poller.claim(poll, compile_outbox(poll.trigger_config), await _opool(poller, poll)) == 2
    await Dispatcher(pool, settings).resolve_once()  # queued executions...
    response = await owner.client.post(f"/api/workflows/{poll.workflow_id}/deactivate")
    assert response.status_code == 200, response.text  # ...cancelled before any attempt

    assert await poller.write_back_all() == 2
    assert await _statuses(owner_conn, table) == ["PENDING"] * 2
    outcomes = await pool.fetch("SELECT outcome FROM outbox_claims WHERE workflow_id = $1", poll.workflow_id)
    assert [o["outcome"] for o in outcomes] == ["released", "released"]


async def test_a_row_whose_execution_outlives_the_lease_is_not_claimed_twice(
    owner: Owner, owner_db: OwnerDb, owner_conn: asyncpg.Connection, pool: asyncpg.Pool, poller: OutboxPoller
) -> None:
    table = "hx_long_running"
    await make_table(owner_conn, table)
    await insert_rows(owner_conn, table, 1)
    poll = await _workflow(owner, owner_db.url, table, lease_timeout_s=60)
    sql = compile_outbox(poll.trigger_config)
    assert await poller.claim(poll, sql, await _opool(poller, poll)) == 1
    # The execution is still running (retries backing off) long after the row's lease ran out.
    await owner_conn.execute(f"UPDATE {table} SET updated_at = now() - interval '1 hour'")
    await pool.execute(
        "UPDATE outbox_claims SET claimed_at = now() - interval '1 hour' WHERE workflow_id = $1", poll.workflow_id
    )

    assert await poller.claim(poll, sql, await _opool(poller, poll)) == 0
    assert [c[1:] for c in await _claims(pool, poll)] == [(1, "claimed")]


async def test_an_enum_status_column_is_claimed_and_written_back(
    owner: Owner,
    owner_db: OwnerDb,
    owner_conn: asyncpg.Connection,
    pool: asyncpg.Pool,
    poller: OutboxPoller,
    settings: Settings,
) -> None:
    await owner_conn.execute("DROP TABLE IF EXISTS hx_enum; DROP TYPE IF EXISTS hx_state")
    await owner_conn.execute("CREATE TYPE hx_state AS ENUM ('PENDING', 'PROCESSING', 'SENT', 'FAILED')")
    await owner_conn.execute(
        "CREATE TABLE hx_enum (id uuid PRIMARY KEY DEFAULT gen_random_uuid(), state hx_state NOT NULL DEFAULT "
        "'PENDING', error_details jsonb)"
    )
    await owner_conn.execute("INSERT INTO hx_enum DEFAULT VALUES")
    poll = await _workflow(
        owner,
        owner_db.url,
        "hx_enum",
        status_column="state",
        conditions=None,
        due_column=None,
        updated_column=None,
    )
    assert await poller.claim(poll, compile_outbox(poll.trigger_config), await _opool(poller, poll)) == 1
    assert await owner_conn.fetchval("SELECT state::text FROM hx_enum") == "PROCESSING"
    await _finish_executions(pool, settings, poll, "succeeded")
    assert await poller.write_back_all() == 1
    row = await owner_conn.fetchrow("SELECT state::text AS state, error_details FROM hx_enum")
    assert row["state"] == "SENT" and orjson.loads(row["error_details"]) == {"transaction_id": "tx-1"}


async def test_a_text_result_column_gets_the_json_and_a_deleted_row_just_closes_its_claim(
    owner: Owner,
    owner_db: OwnerDb,
    owner_conn: asyncpg.Connection,
    pool: asyncpg.Pool,
    poller: OutboxPoller,
    settings: Settings,
) -> None:
    await owner_conn.execute("DROP TABLE IF EXISTS hx_text_result")
    await owner_conn.execute(
        "CREATE TABLE hx_text_result (id int PRIMARY KEY, status text NOT NULL DEFAULT 'PENDING', outcome text)"
    )
    await owner_conn.execute("INSERT INTO hx_text_result (id) VALUES (1), (2)")
    poll = await _workflow(
        owner,
        owner_db.url,
        "hx_text_result",
        status_column="status",
        result_column="outcome",
        conditions=None,
        due_column=None,
        updated_column=None,
    )
    assert await poller.claim(poll, compile_outbox(poll.trigger_config), await _opool(poller, poll)) == 2
    await owner_conn.execute("DELETE FROM hx_text_result WHERE id = 2")
    await _finish_executions(pool, settings, poll, "succeeded")

    assert await poller.write_back_all() == 2
    row = await owner_conn.fetchrow("SELECT status, outcome FROM hx_text_result WHERE id = 1")
    assert row["status"] == "SENT" and orjson.loads(row["outcome"]) == {"transaction_id": "tx-1"}
    assert [c[2] for c in await _claims(pool, poll)] == ["written_back", "written_back"]
