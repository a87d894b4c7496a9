"""Nothing is stranded: executions whose automation workflow is gone are re-driven, once.

Runs a dispatcher (with its reconciler) and a worker against the session stack with a fast
reconcile interval and a small pending cap, and counts requests at a local receiver.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import httpx
import pytest
from temporalio.client import Client, WorkflowExecutionStatus
from temporalio.service import RPCError, RPCStatusCode

from hookyard import services
from oauth.crypto import Keyring
from schemas import db
from schemas.store import executions as execution_store
from schemas.store import reconcile as reconcile_store
from settings import Settings
from telemetry.metrics import Metrics
from tests.conftest import Owner, Receiver, serve, wait_for
from tests.factories import create_endpoint, create_workflow, executions, send
from tests.fake_gmail import FakeGmail
from tests.gmail_support import connect_google, unique_email
from tests.integration.test_newsletter import (
    FakeProvider,
    execution,
    finished,
    newsletter_workflow,
    provider,
    readers,
    run_now,
)
from worker.automation.contract import automation_id
from worker.dispatch.dispatcher import Dispatcher, Handover
from worker.gmail.contract import mailbox_workflow_id
from worker.newsletter.contract import newsletter_id

PENDING_CAP = 3
__all__ = ["provider"]  # the fake Resend of the newsletter tests, as a fixture here too


@pytest.fixture(scope="module")
async def gmail() -> AsyncIterator[FakeGmail]:
    fake = FakeGmail()
    async with serve(fake.app, services.free_port(), lifespan="off") as url:  # type: ignore[arg-type]
        fake.url = url
        yield fake


@pytest.fixture(scope="module")
def fast(settings: Settings, gmail: FakeGmail) -> Settings:
    return settings.replace(
        reconcile_interval_s=0.5,
        reconcile_grace_s=1.0,
        automation_max_pending=PENDING_CAP,
        gmail_api_base=gmail.url,
        gmail_topic="projects/hookyard-test/topics/gmail",
    )


METRICS = Metrics()
# Automations whose hand-over Temporal is made to refuse, as it would a payload it cannot take.
POISONED: set[str] = set()


class _PoisonableDispatcher(Dispatcher):
    async def _start_or_signal(self, client: Client, handover: Handover) -> None:
        if any(str(workflow_id) in POISONED for workflow_id in handover.workflows()):
            raise RPCError("blob data size exceeds limit", RPCStatusCode.INVALID_ARGUMENT, b"")
        await super()._start_or_signal(client, handover)


@pytest.fixture(scope="module")
async def reconciling(fast: Settings, keyring: Keyring, base_url: str) -> AsyncIterator[Client]:
    """Dispatcher (hand-over, reconciler) and worker in this process."""
    from worker.main import run_worker

    stop = asyncio.Event()
    dpool = await db.create_pool(fast.database_url, min_size=1, max_size=4)
    tasks = [
        asyncio.create_task(_PoisonableDispatcher(dpool, fast, metrics=METRICS).run(stop)),
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
    # The lane holding it (with its other workflows' executions, which the reconciler re-drives too).
    await reconciling.get_workflow_handle(execution["temporal"]["workflow_id"]).terminate("hostile operator")

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


async def test_execution_signalled_to_an_ended_run_is_rerun_though_a_new_run_is_up(
    reconciling: Client, owner: Owner, pool: asyncpg.Pool, receiver: Receiver
) -> None:
    target = f"/orphan/{uuid.uuid4().hex}"
    endpoint = await create_endpoint(owner.client)
    workflow = await create_workflow(owner.client, endpoint["id"], receiver.url + target)
    async with httpx.AsyncClient(base_url=owner.client.base_url) as http:
        assert (await send(http, endpoint, b'{"n": 1}')).status_code == 202  # starts a new run
    await wait_for(lambda: _one(owner, workflow, "succeeded"), timeout=30)
    async with pool.acquire() as conn:
        # Signalled to a run that was terminated before the current one started.
        orphan = await conn.fetchval(
            "INSERT INTO executions (owner_id, workflow_id, trigger_data, signalled_at) "
            "VALUES ($1, $2, '{}'::jsonb, now() - interval '60 seconds') RETURNING id",
            uuid.UUID(owner.id),
            uuid.UUID(workflow["id"]),
        )

    async def orphan_done() -> bool:
        return (await _status(pool, str(orphan)))["status"] == "succeeded"

    await wait_for(orphan_done, timeout=20)
    await asyncio.sleep(1.5)
    assert len(receiver.to(target)) == 2


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
                conn, [uuid.UUID(execution["id"])], execution["temporal"]["workflow_id"], "another-run"
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


async def test_a_workflow_temporal_refuses_is_retried_alone_while_others_are_handed_over(
    reconciling: Client, owner: Owner, pool: asyncpg.Pool, receiver: Receiver
) -> None:
    poisoned_target, healthy_target = f"/poisoned/{uuid.uuid4().hex}", f"/healthy/{uuid.uuid4().hex}"
    endpoint = await create_endpoint(owner.client)
    poisoned = await create_workflow(owner.client, endpoint["id"], receiver.url + poisoned_target)
    healthy = await create_workflow(owner.client, endpoint["id"], receiver.url + healthy_target)
    outages = METRICS.handover_failures._value.get()
    POISONED.add(poisoned["id"])
    try:
        async with httpx.AsyncClient(base_url=owner.client.base_url) as http:
            assert (await send(http, endpoint, b'{"n": 1}')).status_code == 202
        await wait_for(lambda: _one(owner, healthy, "succeeded"), timeout=15)
        assert METRICS.handover_workflow_failures._value.get() >= 1
        # Not taken for Temporal being down: nothing else waits on the refused workflow.
        assert METRICS.handover_failures._value.get() == outages
        stuck = await _one(owner, poisoned)
        assert stuck is not None and stuck["status"] == "queued"
    finally:
        POISONED.discard(poisoned["id"])
    await wait_for(lambda: _one(owner, poisoned, "succeeded"), timeout=45)
    assert len(receiver.to(poisoned_target)) == 1
    assert len(receiver.to(healthy_target)) == 1


async def test_a_terminated_mailbox_workflow_of_an_active_mailbox_is_started_again(
    reconciling: Client, owner: Owner, pool: asyncpg.Pool, keyring: Keyring, gmail: FakeGmail, receiver: Receiver
) -> None:
    email, token = unique_email(), f"tok-{uuid.uuid4().hex}"
    box = gmail.mailbox(email, token)
    credential = await connect_google(pool, keyring, owner.id, email, token, mailbox=False)
    response = await owner.client.post(
        "/api/workflows",
        json={
            "name": "mail in",
            "trigger": {"type": "gmail.receive-email", "config": {"mailbox": credential}},
            "action": {"type": "http.request", "config": {"url": receiver.url + "/mail"}},
        },
    )
    assert response.status_code == 201, response.text
    await wait_for(lambda: _truthy(len(box.watches) == 1), timeout=30)
    handle = reconciling.get_workflow_handle(mailbox_workflow_id(credential))
    await handle.terminate("hostile operator")

    async def running_again() -> bool:
        described = await handle.describe()
        return described.status == WorkflowExecutionStatus.RUNNING

    await wait_for(running_again, timeout=30)
    await wait_for(lambda: _truthy(len(box.watches) >= 2), timeout=30)  # the new run renewed the watch


async def test_a_terminated_newsletter_is_started_again_and_sends_to_each_recipient_once(
    reconciling: Client, owner: Owner, provider: FakeProvider
) -> None:
    send_at = datetime.now(UTC) + timedelta(seconds=3)
    workflow = await newsletter_workflow(owner, send_at="{{ trigger.send_at }}")
    execution_id = await run_now(
        owner, workflow, {"issue": 1, "send_at": send_at.isoformat(), "subscribers": readers(5)}
    )

    async def scheduled() -> bool:
        found = await execution(owner, execution_id)
        return (found["result"] or {}).get("status") == "scheduled"

    await wait_for(scheduled, timeout=30)
    await reconciling.get_workflow_handle(newsletter_id(execution_id)).terminate("hostile operator")

    done = await finished(owner, execution_id, timeout=45)
    assert done["result"]["status"] == "sent"
    assert sorted(provider.to()) == sorted(r["email"] for r in readers(5))


async def test_an_overdue_retry_that_a_running_automation_counts_as_done_is_run_again(
    reconciling: Client, owner: Owner, pool: asyncpg.Pool, receiver: Receiver
) -> None:
    target = f"/forgotten/{uuid.uuid4().hex}"
    endpoint = await create_endpoint(owner.client)
    workflow = await create_workflow(owner.client, endpoint["id"], receiver.url + target)
    async with httpx.AsyncClient(base_url=owner.client.base_url) as http:
        assert (await send(http, endpoint, b'{"n": 1}')).status_code == 202
    first = await wait_for(lambda: _one(owner, workflow, "succeeded"), timeout=30)
    async with pool.acquire() as conn:
        # Open in PostgreSQL, done for the automation (still running): as after a lost signal.
        await conn.execute(
            "UPDATE executions SET status = 'running', finished_at = NULL, "
            "next_attempt_at = now() - interval '1 minute' WHERE id = $1",
            uuid.UUID(first["id"]),
        )
    described = await reconciling.get_workflow_handle(first["temporal"]["workflow_id"]).describe()
    assert described.status == WorkflowExecutionStatus.RUNNING

    async def second_attempt() -> dict[str, Any] | None:
        found = await _one(owner, workflow, "succeeded")
        return found if found and found["attempts"] == 2 else None

    await wait_for(second_attempt, timeout=20)
    assert len(receiver.to(target)) == 2


async def test_only_one_reconciler_replica_works_on_a_workflow_at_a_time(pool: asyncpg.Pool) -> None:
    key = automation_id(str(uuid.uuid4()))
    async with pool.acquire() as first, pool.acquire() as second:
        assert await reconcile_store.lease(first, [key], 30.0) == [key]
        assert await reconcile_store.lease(second, [key], 30.0) == []
        await first.execute("UPDATE reconcile_leases SET lease_until = now() WHERE temporal_workflow_id = $1", key)
        assert await reconcile_store.lease(second, [key], 30.0) == [key]


async def _truthy(value: bool) -> bool:
    return value


async def _received(receiver: Receiver, target: str) -> bool:
    return bool(receiver.to(target))


async def test_the_hand_over_scan_goes_round_so_no_automation_waits_behind_the_first_ones(
    fast: Settings, owner: Owner, pool: asyncpg.Pool, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    from worker.dispatch import dispatcher as dispatcher_module

    endpoint = await create_endpoint(owner.client)
    mine = {
        uuid.UUID((await create_workflow(owner.client, endpoint["id"], receiver.url + "/round"))["id"])
        for _ in range(3)
    }
    async with pool.acquire() as conn:
        for workflow_id in mine:  # work not yet handed over (no dispatcher runs in this test)
            await conn.execute(
                "INSERT INTO executions (owner_id, workflow_id, trigger_data) VALUES ($1, $2, '{}'::jsonb)",
                uuid.UUID(owner.id),
                workflow_id,
            )
        waiting = await conn.fetchval(
            "SELECT count(DISTINCT workflow_id) FROM executions "
            "WHERE signalled_at IS NULL AND status IN ('queued', 'running')"
        )
    monkeypatch.setattr(dispatcher_module, "HANDOVER_WORKFLOWS", 1)
    scanner = Dispatcher(pool, fast)
    seen: set[uuid.UUID] = set()
    async with pool.acquire() as conn:
        for _ in range(waiting):
            seen.update(await scanner._handover_scan(conn))
        await conn.execute("UPDATE executions SET status = 'cancelled' WHERE workflow_id = ANY($1::uuid[])", list(mine))
    assert mine <= seen
