"""SIGTERM is graceful: each hookyard process finishes what it has started, exits 0, loses nothing.

The processes run as real subprocesses (tests/processes.py), two of each kind, in a private
database and task queue. Where a test needs a process caught in the middle of its work, it
holds a row lock the process must wait for, so the moment is certain rather than hoped for.
"""

from __future__ import annotations

import asyncio
import os
import signal
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any
from uuid import UUID

import httpx
import pytest

from schemas.store.events import NewEvent, insert_events
from tests.conftest import Receiver, Stack, wait_for
from tests.factories import create_endpoint, create_workflow, signed
from tests.processes import (
    AppProcess,
    Deployment,
    Load,
    assert_ran_exactly_once,
    deployment,
    owner_client,
    refuses_connections,
    settled,
    unhandled,
    waiting_on_lock,
)

pytestmark = pytest.mark.integration

GRACE_S = 10  # HOOKYARD_WORKER_GRACEFUL_SHUTDOWN_S for these workers
API_EXIT_S = 45.0  # uvicorn drains for up to 30 s
EXIT_S = 30.0


@dataclass
class Site:
    deploy: Deployment
    apis: list[AppProcess]
    dispatchers: list[AppProcess]
    workers: list[AppProcess]
    owner_id: UUID
    endpoint: dict[str, Any]
    workflow_id: str
    path: str

    @property
    def paths(self) -> dict[str, str]:
        return {self.workflow_id: self.path}

    async def replace(self, old: AppProcess, new: AppProcess | None = None) -> AppProcess:
        """Put a process of the same kind (`new`, if already spawned) in place of `old`."""
        group = {"serve": self.apis, "dispatch": self.dispatchers, "worker": self.workers}[old.kind]
        new = new or self.deploy.spawn(old.kind)
        await self.deploy.started(new)
        group[group.index(old)] = new
        return new


@pytest.fixture(scope="module")
async def site(stack: Stack, receiver: Receiver) -> AsyncIterator[Site]:
    async with deployment(stack, HOOKYARD_WORKER_GRACEFUL_SHUTDOWN_S=str(GRACE_S)) as deploy:
        procs = [deploy.spawn(kind) for kind in ("serve", "serve", "dispatch", "dispatch", "worker", "worker")]
        await deploy.started(*procs)
        client = await owner_client(deploy, procs[0])
        async with client:
            endpoint = await create_endpoint(client)
            path = f"/shutdown/{uuid.uuid4().hex}"
            workflow = await create_workflow(client, endpoint["id"], receiver.url + path, concurrency_limit=100)
        async with deploy.pool.acquire() as conn:
            owner = await conn.fetchval("SELECT owner_id FROM endpoints WHERE id = $1", UUID(endpoint["id"]))
        yield Site(deploy, procs[0:2], procs[2:4], procs[4:6], owner, endpoint, workflow["id"], path)


async def test_api_sigterm_answers_the_request_in_flight_then_exits_0(site: Site, receiver: Receiver) -> None:
    api = site.apis[0]
    msg_id = uuid.uuid4().hex
    body = b'{"in_flight": true}'
    async with site.deploy.pool.acquire() as conn, httpx.AsyncClient(timeout=60) as http:
        # An uncommitted row with the same delivery id makes the api's inbox write wait for us.
        blocker = conn.transaction()
        await blocker.start()
        await insert_events(conn, [_same_delivery(site, msg_id)])
        request = asyncio.create_task(
            http.post(
                f"{api.url}/hooks/{site.endpoint['id']}",
                content=body,
                headers=signed(site.endpoint["scheme"], site.endpoint["secret"], body, msg_id),
            )
        )
        await wait_for(lambda: waiting_on_lock(site.deploy.pool, api), timeout=30)
        api.terminate()
        await wait_for(lambda: refuses_connections(api), timeout=30)
        assert not request.done()
        await blocker.rollback()
        response = await request
    assert response.status_code == 202, response.text
    assert await api.exit_code(API_EXIT_S) == 0, api.log_tail()
    await site.replace(api)
    event_id = response.json()["event_id"]
    await settled(site.deploy.pool, [event_id], workflows=1)
    await assert_ran_exactly_once(site.deploy.pool, receiver, [event_id], site.paths)


async def test_dispatcher_sigterm_mid_pass_completes_the_pass_then_exits_0(site: Site, receiver: Receiver) -> None:
    busy, other = site.dispatchers
    os.kill(other.popen.pid, signal.SIGSTOP)  # only `busy` may touch the inbox meanwhile
    try:
        async with site.deploy.pool.acquire() as conn:
            # Holding the workflow's row stops `busy` inside its pass, with the events claimed.
            held = conn.transaction()
            await held.start()
            await conn.execute("SELECT 1 FROM workflows WHERE id = $1 FOR UPDATE", UUID(site.workflow_id))
            event_ids = await _send(site, 10)
            await wait_for(lambda: waiting_on_lock(site.deploy.pool, busy), timeout=30)
            busy.terminate()
            await asyncio.sleep(1)
            assert busy.alive(), "the dispatcher left in the middle of its pass"
            await held.rollback()
        assert await busy.exit_code(EXIT_S) == 0, busy.log_tail()
        # The pass it was in finished whole: what it claimed is resolved and handed to Temporal;
        # what came after it is untouched, left for the replicas.
        async with site.deploy.pool.acquire() as conn:
            rows = await conn.fetch(
                "SELECT e.status, x.signalled_at FROM events e LEFT JOIN executions x ON x.event_id = e.id "
                "WHERE e.id = ANY($1::uuid[])",
                [UUID(e) for e in event_ids],
            )
        states = {(r["status"], r["signalled_at"] is not None) for r in rows}
        assert ("dispatched", True) in states
        assert states <= {("dispatched", True), ("received", False)}
    finally:
        os.kill(other.popen.pid, signal.SIGCONT)
    await site.replace(busy)
    await settled(site.deploy.pool, event_ids, workflows=1)
    await assert_ran_exactly_once(site.deploy.pool, receiver, event_ids, site.paths)


async def test_dispatcher_killed_mid_pass_releases_its_claims_to_the_others(site: Site, receiver: Receiver) -> None:
    crashing, other = site.dispatchers
    os.kill(other.popen.pid, signal.SIGSTOP)
    try:
        async with site.deploy.pool.acquire() as conn:
            held = conn.transaction()
            await held.start()
            await conn.execute("SELECT 1 FROM workflows WHERE id = $1 FOR UPDATE", UUID(site.workflow_id))
            event_ids = await _send(site, 10)
            await wait_for(lambda: waiting_on_lock(site.deploy.pool, crashing), timeout=30)
            crashing.kill()
            await crashing.exit_code(EXIT_S)
            await held.rollback()
    finally:
        os.kill(other.popen.pid, signal.SIGCONT)
    # The crashed pass rolled back: the surviving replica claims the same events and runs each once.
    await settled(site.deploy.pool, event_ids, workflows=1)
    await assert_ran_exactly_once(site.deploy.pool, receiver, event_ids, site.paths)
    await site.replace(crashing)


async def test_worker_sigterm_lets_a_slow_action_finish_before_exiting(site: Site, receiver: Receiver) -> None:
    receiver.delay_s = 2.0
    try:
        [event_id] = await _send(site, 1)
        await wait_for(lambda: _arrived(receiver, site.path, site.deploy, event_id), timeout=30)
        # Whichever worker runs the action, both are told to stop while it is running.
        for worker in site.workers:
            worker.terminate()
        for worker in site.workers:
            assert await worker.exit_code(EXIT_S) == 0, worker.log_tail()
    finally:
        receiver.delay_s = 0.0
    # Finished and recorded by the stopping worker itself: no other worker exists yet.
    [execution] = await assert_ran_exactly_once(site.deploy.pool, receiver, [event_id], site.paths)
    assert execution["attempts"] == 1
    for worker in list(site.workers):
        await site.replace(worker)
    # The replacements carry on the automation: the next event runs, the first does not rerun.
    [later] = await _send(site, 1)
    await settled(site.deploy.pool, [later], workflows=1)
    rows = await assert_ran_exactly_once(site.deploy.pool, receiver, [event_id, later], site.paths)
    assert [r["attempts"] for r in rows] == [1, 1]


async def test_rolling_restart_under_load_loses_and_repeats_nothing(site: Site, receiver: Receiver) -> None:
    load = Load(site.endpoint, [api.url for api in site.apis])
    load.start()
    try:
        for group, bound in ((site.apis, API_EXIT_S), (site.dispatchers, EXIT_S), (site.workers, EXIT_S)):
            await load.until(len(load.acknowledged) + 40)
            # As in a rolling update: the replacement starts while the old one drains.
            old, new = group[0], site.deploy.spawn(group[0].kind)
            old.terminate()
            assert await old.exit_code(bound) == 0, old.log_tail()
            await site.replace(old, new)
            if old.kind == "serve":
                load.targets[load.targets.index(old.url)] = new.url
        await load.until(len(load.acknowledged) + 40)
    finally:
        await load.stop()
    event_ids = list(load.acknowledged.values())
    await settled(site.deploy.pool, event_ids, workflows=1)
    rows = await assert_ran_exactly_once(site.deploy.pool, receiver, event_ids, site.paths)
    assert {r["attempts"] for r in rows} == {1}
    assert await unhandled(site.deploy.pool) == (0, 0)


async def _send(site: Site, count: int) -> list[str]:
    """Deliver `count` webhooks through the first api; their event ids."""
    ids = []
    async with httpx.AsyncClient(base_url=site.apis[0].url, timeout=30) as http:
        for _ in range(count):
            body = f'{{"n": "{uuid.uuid4().hex}"}}'.encode()
            headers = signed(site.endpoint["scheme"], site.endpoint["secret"], body)
            response = await http.post(f"/hooks/{site.endpoint['id']}", content=body, headers=headers)
            assert response.status_code == 202, response.text
            ids.append(response.json()["event_id"])
    return ids


def _same_delivery(site: Site, msg_id: str) -> NewEvent:
    return NewEvent(site.owner_id, "webhook", site.endpoint["id"], f"id:{msg_id}", {}, b"{}")


async def _arrived(receiver: Receiver, path: str, deploy: Deployment, event_id: str) -> bool:
    async with deploy.pool.acquire() as conn:
        execution_id = await conn.fetchval("SELECT id FROM executions WHERE event_id = $1", UUID(event_id))
    return execution_id is not None and any(
        r.headers.get("idempotency-key") == str(execution_id) for r in receiver.to(path)
    )
