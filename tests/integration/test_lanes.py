"""Execution lanes: many user workflows share one lane workflow, each keeping its own limits.

Every test puts its workflows into a lane of its own (`workflows.lane` is fixed per workflow and
the hand-over uses it whatever the lane count), so the lane's history holds only their work.
"""

from __future__ import annotations

import asyncio
import random
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import httpx
import pytest
from temporalio.client import Client, WorkflowExecutionStatus

from oauth.crypto import Keyring
from schemas import db
from settings import Settings
from tests.conftest import Owner, serve, wait_for
from tests.factories import create_endpoint, create_workflow, executions, send
from tests.processes import services
from worker.automation.contract import lane_id
from worker.dispatch.dispatcher import Dispatcher

pytestmark = pytest.mark.integration


class Target:
    """An action target that counts requests in flight per path and can be slowed per path."""

    def __init__(self) -> None:
        self.url = ""
        self.delay_s: dict[str, float] = {}
        self.inflight: dict[str, int] = defaultdict(int)
        self.most: dict[str, int] = defaultdict(int)
        self.seen: dict[str, list[str]] = defaultdict(list)  # idempotency keys per path, in order

    async def app(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        while (await receive()).get("more_body"):
            pass
        path = scope["path"]
        headers = {k.decode(): v.decode() for k, v in scope["headers"]}
        self.seen[path].append(headers.get("idempotency-key", ""))
        self.inflight[path] += 1
        self.most[path] = max(self.most[path], self.inflight[path])
        try:
            await asyncio.sleep(self.delay_s.get(path, 0.0))
        finally:
            self.inflight[path] -= 1
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b'{"ok": true}'})


@pytest.fixture(scope="module")
async def target() -> AsyncIterator[Target]:
    fake = Target()
    async with serve(fake.app, services.free_port(), lifespan="off") as url:  # type: ignore[arg-type]
        fake.url = url
        yield fake


@pytest.fixture(scope="module")
def lanes_settings(settings: Settings) -> Settings:
    return settings.replace(reconcile_interval_s=0.5, reconcile_grace_s=1.0, automation_max_batch=10)


@pytest.fixture(scope="module")
async def temporal(lanes_settings: Settings, keyring: Keyring, base_url: str) -> AsyncIterator[Client]:
    """Dispatcher (hand-over, reconciler) and worker in this process, lanes on."""
    from worker.main import run_worker

    assert lanes_settings.lanes > 0
    stop = asyncio.Event()
    dpool = await db.create_pool(lanes_settings.database_url, min_size=1, max_size=4)
    tasks = [
        asyncio.create_task(Dispatcher(dpool, lanes_settings).run(stop)),
        asyncio.create_task(run_worker(lanes_settings, keyring, stop)),
    ]
    await asyncio.sleep(0.5)
    for task in tasks:
        if task.done():
            task.result()
    client = await Client.connect(lanes_settings.temporal_address)
    yield client
    stop.set()
    await asyncio.gather(*tasks, return_exceptions=True)
    await dpool.close()


async def _in_one_lane(pool: asyncpg.Pool, workflows: list[dict[str, Any]]) -> int:
    """Move these (new, idle) workflows into a lane no other test uses; returns its number."""
    lane = random.randrange(100, 4096)
    async with pool.acquire() as conn:
        await conn.execute(
            "UPDATE workflows SET lane = $1 WHERE id = ANY($2::uuid[])", lane, [uuid.UUID(w["id"]) for w in workflows]
        )
    return lane


async def _all(owner: Owner, workflow: dict[str, Any], status: str, count: int) -> list[dict[str, Any]] | None:
    found = await executions(owner.client, workflow["id"], status)
    return found if len(found) >= count else None


async def _history_counts(client: Client, temporal_id: str) -> dict[str, int]:
    """Events of each kind over every run of a Temporal workflow."""
    counts: dict[str, int] = defaultdict(int)
    async for run in client.list_workflows(f"WorkflowId = '{temporal_id}'"):
        history = await client.get_workflow_handle(temporal_id, run_id=run.run_id).fetch_history()
        for event in history.events:
            if event.HasField("activity_task_scheduled_event_attributes"):
                counts["activities"] += 1
            elif event.HasField("workflow_execution_signaled_event_attributes"):
                counts["signals"] += 1
            elif event.HasField("workflow_execution_started_event_attributes"):
                counts["runs"] += 1
    return counts


async def test_many_workflows_share_one_lanes_signals_and_batches(
    temporal: Client, lanes_settings: Settings, owner: Owner, pool: asyncpg.Pool, target: Target
) -> None:
    path = f"/shared/{uuid.uuid4().hex}"
    endpoint = await create_endpoint(owner.client)
    workflows = [await create_workflow(owner.client, endpoint["id"], target.url + path) for _ in range(8)]
    lane = await _in_one_lane(pool, workflows)
    async with httpx.AsyncClient(base_url=owner.client.base_url) as http:
        assert (await send(http, endpoint, b'{"n": 1}')).status_code == 202  # one event, eight executions
    done = [await wait_for(lambda w=w: _all(owner, w, "succeeded", 1), timeout=30) for w in workflows]
    holder = lane_id(lanes_settings.task_queue, lane)
    assert {d[0]["temporal"]["workflow_id"] for d in done} == {holder}
    counts = await _history_counts(temporal, holder)
    # Eight workflows, one hand-over signal and one batch (ten per batch), not eight of each.
    assert counts["signals"] == 1
    assert counts["activities"] == 1
    assert len(target.seen[path]) == 8


async def test_a_workflows_concurrency_limit_holds_inside_a_shared_lane(
    temporal: Client, owner: Owner, pool: asyncpg.Pool, target: Target
) -> None:
    limited, other = f"/limited/{uuid.uuid4().hex}", f"/unlimited/{uuid.uuid4().hex}"
    target.delay_s[limited] = target.delay_s[other] = 0.3
    endpoint = await create_endpoint(owner.client)
    slow = await create_workflow(owner.client, endpoint["id"], target.url + limited, concurrency_limit=2)
    wide = await create_workflow(owner.client, endpoint["id"], target.url + other, concurrency_limit=10)
    await _in_one_lane(pool, [slow, wide])
    async with httpx.AsyncClient(base_url=owner.client.base_url) as http:
        for n in range(8):
            assert (await send(http, endpoint, f'{{"n": {n}}}'.encode())).status_code == 202
    await wait_for(lambda: _all(owner, slow, "succeeded", 8), timeout=60)
    await wait_for(lambda: _all(owner, wide, "succeeded", 8), timeout=60)
    assert target.most[limited] == 2  # its own limit, although the lane runs more at once
    assert target.most[other] > 2
    assert len(target.seen[limited]) == 8


async def test_one_hot_workflow_does_not_starve_another_in_its_lane(
    temporal: Client, owner: Owner, pool: asyncpg.Pool, target: Target
) -> None:
    hot_path, cold_path = f"/hot/{uuid.uuid4().hex}", f"/cold/{uuid.uuid4().hex}"
    target.delay_s[hot_path] = 0.2
    hot_endpoint, cold_endpoint = await create_endpoint(owner.client), await create_endpoint(owner.client)
    hot = await create_workflow(owner.client, hot_endpoint["id"], target.url + hot_path, concurrency_limit=5)
    cold = await create_workflow(owner.client, cold_endpoint["id"], target.url + cold_path)
    await _in_one_lane(pool, [hot, cold])
    async with httpx.AsyncClient(base_url=owner.client.base_url) as http:
        for n in range(40):  # eight rounds of its limit: 1.6 s of work at least, queued in the lane
            assert (await send(http, hot_endpoint, f'{{"n": {n}}}'.encode())).status_code == 202
        await wait_for(lambda: _all(owner, hot, "running", 1), timeout=30)
        assert (await send(http, cold_endpoint, b'{"n": "cold"}')).status_code == 202
    await wait_for(lambda: _all(owner, cold, "succeeded", 1), timeout=30)
    hot_done = len(await executions(owner.client, hot["id"], "succeeded"))
    assert hot_done < 40  # the cold one did not wait behind the hot backlog
    await wait_for(lambda: _all(owner, hot, "succeeded", 40), timeout=60)


async def test_deactivating_one_workflow_in_a_lane_leaves_the_others_running(
    temporal: Client, owner: Owner, pool: asyncpg.Pool, target: Target
) -> None:
    stopped_path, running_path = f"/stopped/{uuid.uuid4().hex}", f"/running/{uuid.uuid4().hex}"
    target.delay_s[stopped_path] = 0.3
    endpoint = await create_endpoint(owner.client)
    stopped = await create_workflow(owner.client, endpoint["id"], target.url + stopped_path, concurrency_limit=1)
    running = await create_workflow(owner.client, endpoint["id"], target.url + running_path)
    await _in_one_lane(pool, [stopped, running])
    async with httpx.AsyncClient(base_url=owner.client.base_url) as http:
        for n in range(6):
            assert (await send(http, endpoint, f'{{"n": {n}}}'.encode())).status_code == 202
        await wait_for(lambda: _all(owner, stopped, "succeeded", 1), timeout=30)
        patched = await owner.client.patch(f"/api/workflows/{stopped['id']}", json={"active": False})
        assert patched.status_code == 200, patched.text
        for n in range(6, 10):
            assert (await send(http, endpoint, f'{{"n": {n}}}'.encode())).status_code == 202
    await wait_for(lambda: _all(owner, running, "succeeded", 10), timeout=30)

    async def stopped_settled() -> list[dict[str, Any]] | None:
        found = await executions(owner.client, stopped["id"])
        return found if all(x["status"] in ("succeeded", "cancelled") for x in found) else None

    settled = await wait_for(stopped_settled, timeout=30)
    assert len(settled) == 6  # nothing created after deactivation
    assert any(x["status"] == "cancelled" for x in settled)
    assert len(target.seen[stopped_path]) == sum(x["status"] == "succeeded" for x in settled)


async def test_a_lane_terminated_mid_batch_is_reconciled_and_runs_each_execution_once(
    temporal: Client, lanes_settings: Settings, owner: Owner, pool: asyncpg.Pool, target: Target
) -> None:
    path = f"/killed/{uuid.uuid4().hex}"
    target.delay_s[path] = 1.0
    endpoint = await create_endpoint(owner.client)
    workflow = await create_workflow(owner.client, endpoint["id"], target.url + path, concurrency_limit=1)
    lane = await _in_one_lane(pool, [workflow])
    holder = lane_id(lanes_settings.task_queue, lane)
    async with httpx.AsyncClient(base_url=owner.client.base_url) as http:
        for n in range(4):
            assert (await send(http, endpoint, f'{{"n": {n}}}'.encode())).status_code == 202
    await wait_for(lambda: _truthy(bool(target.seen[path])), timeout=30)  # a batch is in flight
    await temporal.get_workflow_handle(holder).terminate("hostile operator")
    in_flight = target.seen[path][0]

    # The executions the lane held but had not started are handed over again and run.
    async def rest_done() -> list[dict[str, Any]] | None:
        found = await executions(owner.client, workflow["id"], "succeeded")
        return found if len([x for x in found if x["id"] != in_flight]) >= 3 else None

    await wait_for(rest_done, timeout=45)
    described = await temporal.get_workflow_handle(holder).describe()
    assert described.status == WorkflowExecutionStatus.RUNNING  # started again by the hand-over
    await asyncio.sleep(1.5)  # time for a second delivery, were there one
    keys = target.seen[path]
    assert len(keys) == len(set(keys)) == 4  # each once; the attempt cut off mid-flight is not re-sent
    # It stays running until the batch start-to-close has passed: it may have reached its target.
    cut_off = next(x for x in await executions(owner.client, workflow["id"]) if x["id"] == in_flight)
    assert cut_off["status"] in ("running", "succeeded")


async def _truthy(value: bool) -> bool:
    return value


async def test_an_execution_signalled_to_a_lanes_ended_run_is_rerun_though_a_new_run_is_up(
    temporal: Client, owner: Owner, pool: asyncpg.Pool, target: Target
) -> None:
    path = f"/orphan/{uuid.uuid4().hex}"
    endpoint = await create_endpoint(owner.client)
    workflow = await create_workflow(owner.client, endpoint["id"], target.url + path)
    lane = await _in_one_lane(pool, [workflow])
    async with httpx.AsyncClient(base_url=owner.client.base_url) as http:
        assert (await send(http, endpoint, b'{"n": 1}')).status_code == 202  # starts the lane
    await wait_for(lambda: _all(owner, workflow, "succeeded", 1), timeout=30)
    async with pool.acquire() as conn:
        # Handed to this lane before its running chain of runs began (that chain never had it).
        orphan = await conn.fetchval(
            "INSERT INTO executions (owner_id, workflow_id, trigger_data, signalled_at, lane) "
            "VALUES ($1, $2, '{}'::jsonb, now() - interval '1 day', $3) RETURNING id",
            uuid.UUID(owner.id),
            uuid.UUID(workflow["id"]),
            lane,
        )
    await wait_for(lambda: _all(owner, workflow, "succeeded", 2), timeout=30)
    await asyncio.sleep(1.5)
    assert target.seen[path].count(str(orphan)) == 1
