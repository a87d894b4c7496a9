"""Nothing is stranded: executions whose automation workflow is gone are re-driven, once.

Runs a dispatcher (with its reconciler) and a worker against the session stack with a fast
reconcile interval and a small pending cap, and counts requests at a local receiver.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import httpx
import pytest
from temporalio.client import Client

from hookyard.settings import Settings
from oauth.crypto import Keyring
from schemas import db
from schemas.store import executions as execution_store
from tests.conftest import Owner, Receiver, wait_for
from tests.factories import create_endpoint, create_workflow, executions, send
from worker.contracts import automation_id

PENDING_CAP = 3


@pytest.fixture(scope="module")
def fast(settings: Settings) -> Settings:
    return settings.replace(reconcile_interval_s=0.5, reconcile_grace_s=1.0, automation_max_pending=PENDING_CAP)


@pytest.fixture(scope="module")
async def reconciling(fast: Settings, keyring: Keyring, base_url: str) -> AsyncIterator[Client]:
    """Dispatcher (hand-over, reconciler) and worker in this process."""
    from worker.dispatcher import Dispatcher
    from worker.main import run_worker

    stop = asyncio.Event()
    dpool = await db.create_pool(fast.database_url, min_size=1, max_size=4)
    tasks = [
        asyncio.create_task(Dispatcher(dpool, fast).run(stop)),
        asyncio.create_task(run_worker(fast, keyring, stop)),
    ]
    await asyncio.sleep(0.5)
    for task in tasks:
        if task.done():
            task.result()
    client = await Client.connect(fast.temporal_address)
    yield client
    stop.set()
    await asyncio.gather(*tasks, return_exceptions=True)
    await dpool.close()


async def _status(pool: asyncpg.Pool, execution_id: str) -> asyncpg.Record:
    async with pool.acquire() as conn:
        row: asyncpg.Record = await conn.fetchrow(
            "SELECT status, attempts, next_attempt_at, signalled_at FROM executions WHERE id = $1",
            uuid.UUID(execution_id),
        )
    return row


async def _one(owner: Owner, workflow: dict[str, Any], status: str | None = None) -> dict[str, Any] | None:
    items = await executions(owner.client, workflow["id"], status)
    return items[0] if items else None


async def test_execution_waiting_on_a_retry_timer_of_a_terminated_workflow_is_rerun_exactly_once(
    reconciling: Client, owner: Owner, pool: asyncpg.Pool, receiver: Receiver
) -> None:
    target = f"/stranded/{uuid.uuid4().hex}"
    receiver.script(target, (503, {"retry-after": "2"}))
    endpoint = await create_endpoint(owner.client)
    workflow = await create_workflow(owner.client, endpoint["id"], receiver.url + target)
    async with httpx.AsyncClient(base_url=owner.client.base_url) as http:
        assert (await send(http, endpoint, b'{"n": 1}')).status_code == 202

    async def waiting() -> dict[str, Any] | None:
        execution = await _one(owner, workflow, "running")
        return execution if execution and execution["next_attempt_at"] else None

    execution = await wait_for(waiting, timeout=30)
    await reconciling.get_workflow_handle(automation_id(workflow["id"])).terminate("hostile operator")

    done = await wait_for(lambda: _one(owner, workflow, "succeeded"), timeout=30)
    assert done["id"] == execution["id"]
    assert done["attempts"] == 2
    await asyncio.sleep(1.5)  # time for a second delivery, were there one
    assert len(receiver.to(target)) == 2  # the failed first attempt and the one re-driven
    assert {r.headers["idempotency-key"] for r in receiver.to(target)} == {execution["id"]}


async def test_execution_signalled_to_a_workflow_that_never_started_is_rerun(
    reconciling: Client, owner: Owner, pool: asyncpg.Pool, receiver: Receiver
) -> None:
    target = f"/never/{uuid.uuid4().hex}"
    endpoint = await create_endpoint(owner.client)
    workflow = await create_workflow(owner.client, endpoint["id"], receiver.url + target)
    async with pool.acquire() as conn:
        # As if the dispatcher had marked it signalled but Temporal never had the workflow.
        execution_id = await conn.fetchval(
            "INSERT INTO executions (owner_id, workflow_id, trigger_data, signalled_at) "
            "VALUES ($1, $2, '{}'::jsonb, now() - interval '10 seconds') RETURNING id",
            uuid.UUID(owner.id),
            uuid.UUID(workflow["id"]),
        )
    done = await wait_for(lambda: _one(owner, workflow, "succeeded"), timeout=30)
    assert done["id"] == str(execution_id)
    await asyncio.sleep(1.5)
    assert len(receiver.to(target)) == 1


async def test_an_attempt_in_flight_is_not_run_twice_when_handed_over_again(
    reconciling: Client, owner: Owner, pool: asyncpg.Pool, receiver: Receiver
) -> None:
    target = f"/inflight/{uuid.uuid4().hex}"
    endpoint = await create_endpoint(owner.client)
    workflow = await create_workflow(owner.client, endpoint["id"], receiver.url + target)
    receiver.delay_s = 3.0
    try:
        async with httpx.AsyncClient(base_url=owner.client.base_url) as http:
            assert (await send(http, endpoint, b'{"n": 1}')).status_code == 202
        await wait_for(lambda: _received(receiver, target), timeout=30)
        execution = await _one(owner, workflow, "running")
        assert execution is not None
        async with pool.acquire() as conn:
            # What a reconciler does to a stranded row: the hand-over signals it once more.
            await conn.execute("UPDATE executions SET signalled_at = NULL WHERE id = $1", uuid.UUID(execution["id"]))
            # Another run of the automation trying to claim it meanwhile gets nothing.
            claimed = await execution_store.claim_for_run(
                conn, [uuid.UUID(execution["id"])], automation_id(workflow["id"]), "another-run"
            )
        assert claimed == []
        done = await wait_for(lambda: _one(owner, workflow, "succeeded"), timeout=30)
    finally:
        receiver.delay_s = 0.0
    await asyncio.sleep(1.5)
    assert len(receiver.to(target)) == 1
    assert done["attempts"] == 1


async def test_pending_executions_per_automation_are_capped_and_the_excess_follows(
    reconciling: Client, owner: Owner, pool: asyncpg.Pool, receiver: Receiver
) -> None:
    target = f"/cap/{uuid.uuid4().hex}"
    endpoint = await create_endpoint(owner.client)
    workflow = await create_workflow(owner.client, endpoint["id"], receiver.url + target, concurrency_limit=1)
    receiver.delay_s = 0.2
    most = 0
    try:
        async with httpx.AsyncClient(base_url=owner.client.base_url) as http:
            for n in range(10):
                assert (await send(http, endpoint, f'{{"n": {n}}}'.encode())).status_code == 202

        async def all_done() -> bool:
            nonlocal most
            async with pool.acquire() as conn:
                outstanding = await conn.fetchval(
                    "SELECT count(*) FROM executions WHERE workflow_id = $1 AND signalled_at IS NOT NULL "
                    "AND status IN ('queued', 'running')",
                    uuid.UUID(workflow["id"]),
                )
            most = max(most, outstanding)
            return len(await executions(owner.client, workflow["id"], "succeeded")) == 10

        await wait_for(all_done, timeout=60, interval=0.05)
    finally:
        receiver.delay_s = 0.0
    assert 1 <= most <= PENDING_CAP
    assert len(receiver.to(target)) == 10


async def _received(receiver: Receiver, target: str) -> bool:
    return bool(receiver.to(target))
