"""Replicas are safe: two of each hookyard process at once run every event exactly once.

Two api (`hookyard serve`), two dispatcher and two worker processes run as real subprocesses
(tests/processes.py) in a private database and task queue. Claims use row locks with SKIP
LOCKED, caches are dropped across processes (cache_versions, LISTEN/NOTIFY), and long-lived
state lives in Temporal, so adding a replica must never lose or repeat work.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from tests.conftest import Receiver, Stack, wait_for
from tests.factories import create_endpoint, create_workflow, signed
from tests.processes import (
    AppProcess,
    Deployment,
    assert_ran_exactly_once,
    deployment,
    owner_client,
    settled,
    unhandled,
)

pytestmark = pytest.mark.integration


@dataclass
class Replicas:
    deploy: Deployment
    apis: list[AppProcess]
    owner: httpx.AsyncClient  # talks to api #1


@pytest.fixture(scope="module")
async def replicas(stack: Stack) -> AsyncIterator[Replicas]:
    async with deployment(stack) as deploy:
        procs = [deploy.spawn(kind) for kind in ("serve", "serve", "dispatch", "dispatch", "worker", "worker")]
        await deploy.started(*procs)
        async with await owner_client(deploy, procs[0]) as owner:
            yield Replicas(deploy, procs[:2], owner)


async def test_two_of_each_process_run_every_event_exactly_once_per_workflow(
    replicas: Replicas, receiver: Receiver
) -> None:
    endpoint = await create_endpoint(replicas.owner)
    paths = await _workflows(replicas.owner, endpoint, receiver, 3)

    event_ids = await _deliver(replicas.apis, endpoint, 600)

    await settled(replicas.deploy.pool, event_ids, workflows=3, timeout=150)
    await assert_ran_exactly_once(replicas.deploy.pool, receiver, event_ids, paths)
    async with replicas.deploy.pool.acquire() as conn:
        statuses = await conn.fetch(
            "SELECT status, count(*) FROM events WHERE id = ANY($1::uuid[]) GROUP BY status",
            [uuid.UUID(e) for e in event_ids],
        )
    assert {r["status"]: r["count"] for r in statuses} == {"dispatched": 600}
    assert await unhandled(replicas.deploy.pool) == (0, 0)


async def test_deactivating_through_one_api_stops_every_replica_routing_to_the_workflow(
    replicas: Replicas, receiver: Receiver
) -> None:
    endpoint = await create_endpoint(replicas.owner)
    paths = await _workflows(replicas.owner, endpoint, receiver, 2)
    stopped, running = list(paths)
    # Both dispatchers and both apis have the routes and the endpoint cached by now.
    warm = await _deliver(replicas.apis, endpoint, 20)
    await settled(replicas.deploy.pool, warm, workflows=2)

    response = await replicas.owner.post(f"/api/workflows/{stopped}/deactivate")
    assert response.status_code == 200, response.text
    after = await _deliver(replicas.apis, endpoint, 40)

    await settled(replicas.deploy.pool, after, workflows=1)
    await assert_ran_exactly_once(replicas.deploy.pool, receiver, after, {running: paths[running]})
    async with replicas.deploy.pool.acquire() as conn:
        routed = await conn.fetchval(
            "SELECT count(*) FROM executions WHERE workflow_id = $1 AND event_id = ANY($2::uuid[])",
            uuid.UUID(stopped),
            [uuid.UUID(e) for e in after],
        )
    assert routed == 0

    # And back: activated through api #2, every replica routes to it again.
    async with httpx.AsyncClient(base_url=replicas.apis[1].url, headers=replicas.owner.headers) as other:
        assert (await other.post(f"/api/workflows/{stopped}/activate")).status_code == 200
    again = await _deliver(replicas.apis, endpoint, 20)
    await settled(replicas.deploy.pool, again, workflows=2)
    await assert_ran_exactly_once(replicas.deploy.pool, receiver, again, paths)


async def test_an_endpoint_deleted_through_one_api_is_refused_by_the_other_without_waiting_for_its_cache(
    replicas: Replicas,
) -> None:
    endpoint = await create_endpoint(replicas.owner)
    second = replicas.apis[1]
    async with httpx.AsyncClient(base_url=second.url, timeout=30) as http:
        assert (await _post(http, endpoint)).status_code == 202  # api #2 caches the endpoint (30 s)
        assert (await replicas.owner.delete(f"/api/endpoints/{endpoint['id']}")).status_code == 204

        async def refused() -> bool:
            return (await _post(http, endpoint)).status_code == 404

        # Well inside the cache's 30 s lifetime: only the notification can have dropped it.
        await wait_for(refused, timeout=15)


async def test_a_schedule_fires_once_per_scheduled_time_whatever_the_number_of_replicas(
    replicas: Replicas, receiver: Receiver
) -> None:
    path = f"/replicas/{uuid.uuid4().hex}"
    body = {
        "name": "every second",
        "trigger": {"type": "schedule.cron", "config": {"interval_s": 1}},
        "action": {"type": "http.request", "config": {"url": receiver.url + path}},
    }
    response = await replicas.owner.post("/api/workflows", json=body)
    assert response.status_code == 201, response.text
    workflow_id = uuid.UUID(response.json()["id"])

    async def fired(count: int) -> bool:
        async with replicas.deploy.pool.acquire() as conn:
            done = await conn.fetchval(
                "SELECT count(*) FROM executions WHERE workflow_id = $1 AND status = 'succeeded'", workflow_id
            )
        return bool(done >= count)

    try:
        await wait_for(lambda: fired(3), timeout=45)
    finally:
        # Deleted, its schedule goes too, so it cannot keep firing at the session's Temporal.
        assert (await replicas.owner.delete(f"/api/workflows/{workflow_id}")).status_code == 204
        await wait_for(lambda: _synced(replicas, workflow_id), timeout=30)
    await asyncio.sleep(2.5)  # firings already under way land
    async with replicas.deploy.pool.acquire() as conn:
        events = await conn.fetch(
            "SELECT id, duplicate_count FROM events WHERE source_type = 'schedule' AND source_id = $1",
            str(workflow_id),
        )
    # One schedule in Temporal, not one per process: no firing reached the inbox twice.
    assert [e["duplicate_count"] for e in events] == [0] * len(events)
    # Firings dispatched after the deactivation have no execution; every other ran once.
    executed = await _executed_events(replicas, workflow_id)
    ran = [str(e["id"]) for e in events if e["id"] in executed]
    assert len(ran) >= 3
    await settled(replicas.deploy.pool, ran, workflows=1)
    await assert_ran_exactly_once(replicas.deploy.pool, receiver, ran, {str(workflow_id): path})


async def _synced(replicas: Replicas, workflow_id: uuid.UUID) -> bool:
    async with replicas.deploy.pool.acquire() as conn:
        done = await conn.fetchval("SELECT synced_version >= sync_version FROM workflows WHERE id = $1", workflow_id)
    return bool(done)


async def _executed_events(replicas: Replicas, workflow_id: uuid.UUID) -> set[uuid.UUID]:
    async with replicas.deploy.pool.acquire() as conn:
        rows = await conn.fetch("SELECT event_id FROM executions WHERE workflow_id = $1", workflow_id)
    return {r["event_id"] for r in rows}


async def _workflows(
    owner: httpx.AsyncClient, endpoint: dict[str, Any], receiver: Receiver, count: int
) -> dict[str, str]:
    """`count` workflows on the endpoint, each posting to its own receiver path; id -> path."""
    paths = {}
    for _ in range(count):
        path = f"/replicas/{uuid.uuid4().hex}"
        workflow = await create_workflow(owner, endpoint["id"], receiver.url + path, concurrency_limit=100)
        paths[workflow["id"]] = path
    return paths


async def _deliver(apis: list[AppProcess], endpoint: dict[str, Any], count: int, concurrency: int = 32) -> list[str]:
    """Send `count` signed webhooks concurrently, alternating between the api processes; event ids."""
    gate = asyncio.Semaphore(concurrency)
    clients = [httpx.AsyncClient(base_url=api.url, timeout=60) for api in apis]

    async def one(n: int) -> str:
        async with gate:
            response = await _post(clients[n % len(clients)], endpoint, f'{{"n": {n}}}'.encode())
        assert response.status_code == 202, response.text
        event_id: str = response.json()["event_id"]
        return event_id

    try:
        return list(await asyncio.gather(*(one(n) for n in range(count))))
    finally:
        for client in clients:
            await client.aclose()


async def _post(http: httpx.AsyncClient, endpoint: dict[str, Any], body: bytes = b'{"n": 0}') -> httpx.Response:
    headers = signed(endpoint["scheme"], endpoint["secret"], body, uuid.uuid4().hex)
    return await http.post(f"/hooks/{endpoint['id']}", content=body, headers=headers)
