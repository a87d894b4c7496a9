"""Error workflows in the store: what the transaction that ends an execution writes for them.

No dispatcher runs in this module: executions are ended here the way the worker ends them,
so each test sees exactly what one terminal transition writes.
"""

from __future__ import annotations

from typing import Any
from uuid import UUID

import asyncpg
import orjson
import pytest

from schemas.store import failure_events
from schemas.store.executions import record_outcomes
from schemas.store.failure_events import SOURCE_TYPE, start_error_workflows
from tests.browser.support import signed_in
from tests.conftest import Owner
from tests.integration.api_support import create_endpoint, create_workflow, create_workflow_from

pytestmark = pytest.mark.integration

TRIGGER = {"body": {"order": 7}, "headers": {}}


async def error_workflow(owner: Owner, **extra: Any) -> dict[str, Any]:
    body = {
        "name": "alert",
        "trigger": {"type": "workflow.failure", "config": {}},
        "action": {"type": "http.request", "config": {"url": "https://example.com/alert"}},
        **extra,
    }
    return await create_workflow_from(owner, body)


async def failing_workflow(owner: Owner, on_failure: str | None) -> dict[str, Any]:
    endpoint = await create_endpoint(owner)
    return await create_workflow(owner, endpoint["id"], name="orders", on_failure=on_failure)


async def running_execution(pool: asyncpg.Pool, owner: Owner, workflow_id: str, event_id: UUID | None = None) -> UUID:
    """An execution with an attempt in flight, as `claim_for_run` leaves it."""
    async with pool.acquire() as conn:
        execution_id: UUID = await conn.fetchval(
            "INSERT INTO executions (owner_id, workflow_id, event_id, trigger_data, status, attempts, started_at, "
            "attempt_started_at, signalled_at) VALUES ($1, $2, $3, $4, 'running', 2, now(), now(), now()) RETURNING id",
            UUID(owner.id),
            UUID(workflow_id),
            event_id,
            TRIGGER,
        )
    return execution_id


async def end(pool: asyncpg.Pool, execution_id: UUID, status: str = "failed", error: str = "HTTP 500") -> list[UUID]:
    """End the execution as the worker's outcome write does (`record_outcomes`, which calls
    `after_terminal` in its transaction); the error workflow executions that appeared."""
    async with pool.acquire() as conn:
        before = set(await conn.fetchval("SELECT array_agg(id) FROM executions") or [])
        await record_outcomes(conn, [{"id": execution_id, "status": status, "error": error}])
        after = await conn.fetch(
            "SELECT x.id FROM executions x JOIN events e ON e.id = x.event_id WHERE e.source_type = $1 "
            "AND e.dedup_key = $2",
            SOURCE_TYPE,
            str(execution_id),
        )
    return [r["id"] for r in after if r["id"] not in before]


async def executions_of(pool: asyncpg.Pool, workflow_id: str) -> list[asyncpg.Record]:
    async with pool.acquire() as conn:
        rows: list[asyncpg.Record] = await conn.fetch(
            "SELECT * FROM executions WHERE workflow_id = $1 ORDER BY seq", UUID(workflow_id)
        )
    return rows


async def test_a_failure_queues_the_error_workflow_with_the_failed_execution_as_trigger_data(
    pool: asyncpg.Pool, owner: Owner
) -> None:
    alert = await error_workflow(owner)
    orders = await failing_workflow(owner, alert["id"])
    failed = await running_execution(pool, owner, orders["id"])

    [started] = await end(pool, failed, error="gave up after 2 attempts: HTTP 500")

    [execution] = await executions_of(pool, alert["id"])
    assert execution["id"] == started and execution["status"] == "queued"
    data = execution["trigger_data"]
    assert data["trigger"] == TRIGGER
    assert data["execution"]["id"] == str(failed)
    assert data["execution"]["workflow_id"] == orders["id"]
    assert data["execution"]["workflow_name"] == "orders"
    assert data["execution"]["error"] == "gave up after 2 attempts: HTTP 500"
    assert data["execution"]["attempts"] == 2
    assert data["execution"]["status"] == "failed"
    assert data["execution"]["started_at"] and data["execution"]["finished_at"]
    assert data["event_id"] == str(execution["event_id"])


async def test_the_failure_event_is_stored_dispatched_keyed_on_the_failed_execution(
    pool: asyncpg.Pool, owner: Owner
) -> None:
    alert = await error_workflow(owner)
    orders = await failing_workflow(owner, alert["id"])
    failed = await running_execution(pool, owner, orders["id"])

    [started] = await end(pool, failed)

    async with pool.acquire() as conn:
        event = await conn.fetchrow(
            "SELECT * FROM events WHERE source_type = $1 AND dedup_key = $2", SOURCE_TYPE, str(failed)
        )
    assert event["source_id"] == alert["id"] and event["status"] == "dispatched"
    assert str(event["owner_id"]) == owner.id
    assert event["resolution"][0]["execution_id"] == str(started)
    [execution] = await executions_of(pool, alert["id"])
    assert execution["event_id"] == event["id"]
    # The body is the trigger data, so dry runs and the trigger read the same shape.
    assert orjson.loads(event["body"])["execution"]["id"] == str(failed)


async def test_the_same_terminal_rows_seen_twice_start_the_error_workflow_once(
    pool: asyncpg.Pool, owner: Owner
) -> None:
    alert = await error_workflow(owner)
    orders = await failing_workflow(owner, alert["id"])
    failed = await running_execution(pool, owner, orders["id"])
    async with pool.acquire() as conn:
        rows = [{"id": failed, "status": "failed"}]
        await conn.execute("UPDATE executions SET status = 'failed', finished_at = now() WHERE id = $1", failed)
        first = await start_error_workflows(conn, rows)
        second = await start_error_workflows(conn, rows)

    assert len(first) == 1 and second == []
    assert len(await executions_of(pool, alert["id"])) == 1


async def test_a_repeated_outcome_write_starts_nothing(pool: asyncpg.Pool, owner: Owner) -> None:
    alert = await error_workflow(owner)
    orders = await failing_workflow(owner, alert["id"])
    failed = await running_execution(pool, owner, orders["id"])

    first = await end(pool, failed)
    again = await end(pool, failed)

    assert len(first) == 1 and again == []
    assert len(await executions_of(pool, alert["id"])) == 1


async def test_writing_the_same_failed_outcome_twice_starts_the_error_workflow_once(
    pool: asyncpg.Pool, owner: Owner
) -> None:
    # What a retried batch activity does with the outcomes kept in its heartbeat details.
    alert = await error_workflow(owner)
    orders = await failing_workflow(owner, alert["id"])
    failed = await running_execution(pool, owner, orders["id"])
    outcome = {"id": failed, "status": "failed", "error": "gave up after 2 attempts: HTTP 500"}

    async with pool.acquire() as conn:
        await record_outcomes(conn, [outcome])
        await record_outcomes(conn, [outcome])

    [execution] = await executions_of(pool, alert["id"])
    assert execution["trigger_data"]["execution"]["error"] == outcome["error"]


async def test_a_failure_event_that_cannot_be_written_does_not_undo_the_outcome(
    pool: asyncpg.Pool, owner: Owner, monkeypatch: pytest.MonkeyPatch
) -> None:
    alert = await error_workflow(owner)
    orders = await failing_workflow(owner, alert["id"])
    failed = await running_execution(pool, owner, orders["id"])
    monkeypatch.setattr(failure_events, "_START", "SELECT 1 / 0 AS id, $1::uuid[], $2::text, $3::text")

    assert await end(pool, failed) == []

    async with pool.acquire() as conn:
        assert await conn.fetchval("SELECT status FROM executions WHERE id = $1", failed) == "failed"
    assert await executions_of(pool, alert["id"]) == []


async def test_a_rolled_back_failure_leaves_neither_event_nor_execution(pool: asyncpg.Pool, owner: Owner) -> None:
    alert = await error_workflow(owner)
    orders = await failing_workflow(owner, alert["id"])
    failed = await running_execution(pool, owner, orders["id"])

    with pytest.raises(RuntimeError):
        async with pool.acquire() as conn, conn.transaction():
            await conn.execute("UPDATE executions SET status = 'failed', finished_at = now() WHERE id = $1", failed)
            assert await start_error_workflows(conn, [{"id": failed, "status": "failed"}])
            raise RuntimeError("the outcome write died before its commit")

    assert await executions_of(pool, alert["id"]) == []
    assert len(await end(pool, failed)) == 1


@pytest.mark.parametrize("status", ["succeeded", "cancelled"])
async def test_an_execution_that_did_not_fail_starts_nothing(pool: asyncpg.Pool, owner: Owner, status: str) -> None:
    alert = await error_workflow(owner)
    orders = await failing_workflow(owner, alert["id"])
    ended = await running_execution(pool, owner, orders["id"])

    assert await end(pool, ended, status) == []
    assert await executions_of(pool, alert["id"]) == []


async def test_a_failure_of_an_execution_a_failure_started_starts_nothing(pool: asyncpg.Pool, owner: Owner) -> None:
    # A -> B and B -> A: B's run fails, and A is not run again (nor B, for a replay of it).
    a = await error_workflow(owner)
    b = await error_workflow(owner, on_failure=a["id"])
    patched = await owner.client.patch(f"/api/workflows/{a['id']}", json={"on_failure": b["id"]})
    assert patched.status_code == 200, patched.text
    orders = await failing_workflow(owner, a["id"])
    [a_run] = await end(pool, await running_execution(pool, owner, orders["id"]))
    async with pool.acquire() as conn:
        await conn.execute("UPDATE executions SET status = 'running' WHERE id = $1", a_run)

    assert await end(pool, a_run) == []
    replay = await owner.client.post(f"/api/executions/{a_run}/replay")
    assert replay.status_code == 202, replay.text
    replay_id = UUID(replay.json()["id"])
    async with pool.acquire() as conn:
        await conn.execute("UPDATE executions SET status = 'running' WHERE id = $1", replay_id)
    assert await end(pool, replay_id) == []
    assert await executions_of(pool, b["id"]) == []
    assert len(await executions_of(pool, a["id"])) == 2


async def test_a_manual_run_that_fails_starts_the_error_workflow(pool: asyncpg.Pool, owner: Owner) -> None:
    alert = await error_workflow(owner)
    orders = await failing_workflow(owner, alert["id"])
    manual = await running_execution(pool, owner, orders["id"], event_id=None)

    assert len(await end(pool, manual)) == 1
    [execution] = await executions_of(pool, alert["id"])
    assert execution["trigger_data"]["execution"]["event_id"] is None


async def test_an_inactive_error_workflow_is_not_started(pool: asyncpg.Pool, owner: Owner) -> None:
    alert = await error_workflow(owner, active=False)
    orders = await failing_workflow(owner, alert["id"])

    assert await end(pool, await running_execution(pool, owner, orders["id"])) == []
    assert await executions_of(pool, alert["id"]) == []


async def test_an_error_workflow_whose_trigger_changed_is_not_started(pool: asyncpg.Pool, owner: Owner) -> None:
    alert = await error_workflow(owner)
    orders = await failing_workflow(owner, alert["id"])
    endpoint = await create_endpoint(owner)
    trigger = {"type": "webhook.received", "config": {"endpoint_id": endpoint["id"]}}
    assert (await owner.client.patch(f"/api/workflows/{alert['id']}", json={"trigger": trigger})).status_code == 200

    assert await end(pool, await running_execution(pool, owner, orders["id"])) == []
    assert await executions_of(pool, alert["id"]) == []


async def test_deleting_the_error_workflow_leaves_the_reference_null(pool: asyncpg.Pool, owner: Owner) -> None:
    alert = await error_workflow(owner)
    orders = await failing_workflow(owner, alert["id"])
    assert orders["on_failure"] == alert["id"]

    assert (await owner.client.delete(f"/api/workflows/{alert['id']}")).status_code == 204

    shown = (await owner.client.get(f"/api/workflows/{orders['id']}")).json()
    assert shown["on_failure"] is None
    assert await end(pool, await running_execution(pool, owner, orders["id"])) == []


async def test_on_failure_can_be_set_and_cleared_by_patch(owner: Owner) -> None:
    alert = await error_workflow(owner)
    orders = await failing_workflow(owner, None)
    url = f"/api/workflows/{orders['id']}"

    set_ = await owner.client.patch(url, json={"on_failure": alert["id"]})
    kept = await owner.client.patch(url, json={"name": "renamed"})
    cleared = await owner.client.patch(url, json={"on_failure": None})

    assert set_.json()["on_failure"] == alert["id"]
    assert kept.json()["on_failure"] == alert["id"]
    assert cleared.json()["on_failure"] is None


async def test_a_dry_run_of_the_error_workflow_renders_its_stored_failure_events(
    pool: asyncpg.Pool, owner: Owner
) -> None:
    alert = await error_workflow(owner)
    orders = await failing_workflow(owner, alert["id"])
    failed = await running_execution(pool, owner, orders["id"])
    await end(pool, failed, error="HTTP 500")
    action = {
        "type": "http.request",
        "config": {
            "url": "https://example.com/a",
            "body": {"why": "{{ trigger.execution.error }}", "order": "{{ trigger.trigger.body.order }}"},
        },
    }

    response = await owner.client.post(f"/api/workflows/{alert['id']}/dry-run", json={"patch": {"action": action}})

    assert response.status_code == 200, response.text
    [result] = [r for r in response.json()["results"] if r["matched"]]
    assert result["event"]["source_type"] == SOURCE_TYPE
    assert result["action"]["request"]["body"] == {"why": "HTTP 500", "order": 7}


async def test_the_catalog_describes_the_failure_trigger_data(owner: Owner) -> None:
    catalog = (await owner.client.get("/api/catalog")).json()

    [failure] = [t for t in catalog["triggers"] if t["type"] == SOURCE_TYPE]

    assert failure["data_schema"]["properties"]["execution"]["required"][:3] == ["id", "workflow_id", "workflow_name"]
    assert failure["config_schema"] == {"type": "object", "additionalProperties": False, "properties": {}}


async def test_the_console_links_a_workflow_to_its_error_workflow(base_url: str, owner: Owner) -> None:
    alert = await error_workflow(owner)
    orders = await failing_workflow(owner, alert["id"])
    plain = await failing_workflow(owner, None)
    console = await signed_in(base_url, owner.key)
    try:
        named = (await console.get(f"/console/workflows/{orders['id']}")).text
        unnamed = (await console.get(f"/console/workflows/{plain['id']}")).text
    finally:
        await console.aclose()

    assert f'/console/workflows/{alert["id"]}"' in named
    assert "On failure" not in unnamed
