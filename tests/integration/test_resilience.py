"""Nothing lost, nothing run twice: Temporal outages and worker crashes.

Each test gets its own database, Temporal server and task queue, so stopping or killing
things cannot disturb other tests.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import subprocess
import sys
import tempfile
import uuid
from collections.abc import AsyncIterator
from datetime import datetime
from pathlib import Path

import asyncpg
import httpx

from hookyard import services
from oauth.crypto import Keyring
from schemas import db
from schemas.migrate import migrate
from settings import Settings
from tests.conftest import Owner, Receiver, Recorded, Stack, make_settings, new_owner, serve, wait_for
from tests.factories import create_endpoint, create_workflow, executions, send


class Isolated:
    """A private hookyard deployment sharing only the PostgreSQL server with the session."""

    def __init__(self, stack: Stack, settings: Settings, temporal_dir: Path, temporal_port: int) -> None:
        self.stack = stack
        self.settings = settings
        self.temporal_dir = temporal_dir
        self.temporal_port = temporal_port
        self.temporal: services.ManagedProcess | None = None
        self.worker_proc: subprocess.Popen[bytes] | None = None
        self.stop = asyncio.Event()
        self.tasks: list[asyncio.Task[None]] = []

    def start_temporal(self) -> None:
        self.temporal, _ = services.start_temporal(self.temporal_dir, self.temporal_port)

    def stop_temporal(self) -> None:
        assert self.temporal is not None
        self.temporal.stop()

    def spawn_worker(self) -> None:
        """The worker as a real separate process, so it can be killed like a crashed pod."""
        self.worker_proc = self.spawn_another_worker()

    def spawn_another_worker(self) -> subprocess.Popen[bytes]:
        """One more worker process on the same task queue (the caller stops it)."""
        env = {
            **os.environ,
            "DATABASE_URL": self.settings.database_url,
            "TEMPORAL_ADDRESS": self.settings.temporal_address,
            "HOOKYARD_TASK_QUEUE": self.settings.task_queue,
            "HOOKYARD_MASTER_KEYS": ",".join(
                f"{k}:{__import__('base64').b64encode(v).decode()}" for k, v in self.settings.master_keys
            ),
            "HOOKYARD_ACTIVITY_HEARTBEAT_TIMEOUT_S": str(self.settings.activity_heartbeat_timeout_s),
            "HOOKYARD_LOG_LEVEL": "WARNING",
            # The test's receiver is on loopback, which the egress policy refuses by default.
            "HOOKYARD_EGRESS_ALLOW": "127.0.0.0/8,::1",
        }
        return subprocess.Popen([sys.executable, "-m", "hookyard.cli", "worker"], env=env, start_new_session=True)

    async def wait_polling(self, proc: subprocess.Popen[bytes]) -> None:
        """Until Temporal sees this worker process polling for activities (its identity starts with its pid)."""
        from temporalio.api.enums.v1 import TaskQueueType
        from temporalio.api.taskqueue.v1 import TaskQueue
        from temporalio.api.workflowservice.v1 import DescribeTaskQueueRequest
        from temporalio.client import Client

        client = await Client.connect(self.settings.temporal_address)
        request = DescribeTaskQueueRequest(
            namespace="default",
            task_queue=TaskQueue(name=self.settings.task_queue),
            task_queue_type=TaskQueueType.TASK_QUEUE_TYPE_ACTIVITY,
        )

        async def polling() -> bool:
            answer = await client.workflow_service.describe_task_queue(request)
            return any(p.identity.startswith(f"{proc.pid}@") for p in answer.pollers)

        await wait_for(polling, timeout=60, interval=0.2)

    def kill_worker(self) -> None:
        assert self.worker_proc is not None
        os.killpg(self.worker_proc.pid, 9)
        self.worker_proc.wait(5)


@contextlib.asynccontextmanager
async def isolated(
    stack: Stack, *, worker_in_process: bool, **overrides: object
) -> AsyncIterator[tuple[Isolated, str, asyncpg.Pool]]:
    from ingest.app import create_app
    from worker.dispatch.dispatcher import Dispatcher
    from worker.main import run_worker

    name = f"iso_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(stack.database_url)
    await admin.execute(f"CREATE DATABASE {name}")
    await admin.close()
    url = stack.database_url.rsplit("/", 1)[0] + f"/{name}"
    await migrate(url)
    port = services.free_port()
    settings = make_settings(
        stack, database_url=url, temporal_address=f"127.0.0.1:{port}", task_queue=name, **overrides
    )
    iso = Isolated(stack, settings, Path(tempfile.mkdtemp(prefix="hookyard-iso-")), port)
    iso.start_temporal()
    pool = await db.create_pool(url, min_size=1, max_size=4)
    keyring = Keyring(settings.master_keys)
    try:
        async with serve(create_app(settings, keyring), settings.port) as base_url:
            iso.tasks.append(asyncio.create_task(Dispatcher(pool, settings).run(iso.stop)))
            if worker_in_process:
                iso.tasks.append(asyncio.create_task(run_worker(settings, keyring, iso.stop)))
            else:
                iso.spawn_worker()
            yield iso, base_url, pool
    finally:
        iso.stop.set()
        await asyncio.gather(*iso.tasks, return_exceptions=True)
        if iso.worker_proc and iso.worker_proc.poll() is None:
            iso.kill_worker()
        if iso.temporal:
            iso.temporal.stop()
        await pool.close()


async def _owner(pool: asyncpg.Pool, base_url: str) -> Owner:
    return await new_owner(pool, base_url)


async def test_ingest_keeps_accepting_while_temporal_is_down_and_runs_each_event_once_after(
    stack: Stack, receiver: Receiver
):
    target = f"/outage/{uuid.uuid4().hex}"
    async with isolated(stack, worker_in_process=True) as (iso, base_url, pool):
        owner = await _owner(pool, base_url)
        endpoint = await create_endpoint(owner.client)
        workflow = await create_workflow(
            owner.client, endpoint["id"], receiver.url + target, action={"body": {"n": "{{ trigger.body.n }}"}}
        )
        iso.stop_temporal()
        async with httpx.AsyncClient(base_url=base_url) as http:
            answers = [(await send(http, endpoint, f'{{"n": {n}}}'.encode())).status_code for n in range(5)]
        assert answers == [202] * 5
        await asyncio.sleep(1.5)
        assert receiver.to(target) == []
        iso.start_temporal()
        done = await wait_for(lambda: _all(executions(owner.client, workflow["id"], "succeeded"), 5), timeout=60)
        assert len(done) == 5
        await asyncio.sleep(1)
        bodies = sorted(r.body for r in receiver.to(target))
        assert bodies == sorted(f'{{"n":{n}}}'.encode() for n in range(5))
        assert len(await executions(owner.client, workflow["id"])) == 5
        await owner.client.aclose()


async def test_worker_killed_mid_action_is_retried_and_completes(stack: Stack, receiver: Receiver):
    target = f"/crash/{uuid.uuid4().hex}"
    async with isolated(stack, worker_in_process=False) as (iso, base_url, pool):
        owner = await _owner(pool, base_url)
        endpoint = await create_endpoint(owner.client)
        workflow = await create_workflow(owner.client, endpoint["id"], receiver.url + target)
        receiver.delay_s = 2.0
        try:
            async with httpx.AsyncClient(base_url=base_url) as http:
                assert (await send(http, endpoint, b'{"crash": true}')).status_code == 202
            await wait_for(lambda: _count(receiver, target), timeout=30)
            iso.kill_worker()
            receiver.delay_s = 0.0
            iso.spawn_worker()
            [execution] = await wait_for(lambda: executions(owner.client, workflow["id"], "succeeded"), timeout=60)
        finally:
            receiver.delay_s = 0.0
        assert execution["attempts"] == 2
        assert len(await executions(owner.client, workflow["id"])) == 1
        keys = {r.headers["idempotency-key"] for r in receiver.to(target)}
        assert keys == {execution["id"]}
        await owner.client.aclose()


async def test_a_killed_workers_batch_resumes_on_another_worker_within_10_seconds(stack: Stack, receiver: Receiver):
    """With the default heartbeat timeout, the longest stall in deliveries after kill -9 is under 10 s."""
    target = f"/lost/{uuid.uuid4().hex}"
    heartbeat = Settings().activity_heartbeat_timeout_s
    async with isolated(stack, worker_in_process=False, activity_heartbeat_timeout_s=heartbeat) as (
        iso,
        base_url,
        pool,
    ):
        assert iso.worker_proc is not None
        await iso.wait_polling(iso.worker_proc)
        owner = await _owner(pool, base_url)
        endpoint = await create_endpoint(owner.client)
        workflow = await create_workflow(
            owner.client,
            endpoint["id"],
            receiver.url + target,
            action={"body": {"n": "{{ trigger.body.n }}"}},
            concurrency_limit=5,
        )
        receiver.delay_s = 60.0  # the first batch hangs in flight on the worker about to die
        survivor = None
        try:
            async with httpx.AsyncClient(base_url=base_url) as http:
                for n in range(10):
                    assert (await send(http, endpoint, f'{{"n": {n}}}'.encode())).status_code == 202
            await wait_for(lambda: _all(_received(receiver, target), 5), timeout=30)
            survivor = iso.spawn_another_worker()
            await iso.wait_polling(survivor)
            async with pool.acquire() as conn:
                killed_at = await conn.fetchval("SELECT now()")
            iso.kill_worker()
            receiver.delay_s = 0.0
            done = await wait_for(lambda: _all(executions(owner.client, workflow["id"], "succeeded"), 10), timeout=60)
        finally:
            receiver.delay_s = 0.0
            if survivor is not None:
                os.killpg(survivor.pid, 9)
                survivor.wait(5)
        finished = sorted(datetime.fromisoformat(e["finished_at"]) for e in done)
        moments = [killed_at, *finished]
        stall = max((b - a).total_seconds() for a, b in itertools.pairwise(moments))
        print(f"longest stall in deliveries after the worker was killed: {stall:.1f}s")
        assert stall < 10.0
        assert len({r.body for r in receiver.to(target)}) == 10
        await owner.client.aclose()


async def _received(receiver: Receiver, target: str) -> list[Recorded]:
    return receiver.to(target)


async def _all(coro, n: int):  # type: ignore[no-untyped-def]
    items = await coro
    return items if len(items) >= n else None


async def _count(receiver: Receiver, target: str) -> int:
    return len(receiver.to(target))


async def test_storage_outage_answers_503_so_the_sender_retries(stack: Stack, tmp_path: Path):
    from ingest.app import create_app

    pg, url = services.start_postgres(tmp_path, services.free_port(), durable=False)
    try:
        await migrate(url)
        settings = make_settings(stack, database_url=url)
        pool = await db.create_pool(url, min_size=1, max_size=2)
        async with serve(create_app(settings, Keyring(settings.master_keys)), settings.port) as base_url:
            owner = await new_owner(pool, base_url)
            endpoint = await create_endpoint(owner.client)
            async with httpx.AsyncClient(base_url=base_url) as http:
                assert (await send(http, endpoint, b'{"n": 1}')).status_code == 202
                await pool.close()
                pg.stop()
                response = await send(http, endpoint, b'{"n": 2}')
            assert response.status_code == 503
            assert response.json()["error"]["code"] == "unavailable"
            await owner.client.aclose()
    finally:
        pg.stop()


async def test_automation_continues_as_new_and_loses_nothing(stack: Stack, receiver: Receiver):
    from temporalio.client import Client

    target = f"/can/{uuid.uuid4().hex}"
    async with isolated(stack, worker_in_process=True, automation_history_limit=60) as (iso, base_url, pool):
        owner = await _owner(pool, base_url)
        endpoint = await create_endpoint(owner.client)
        workflow = await create_workflow(owner.client, endpoint["id"], receiver.url + target, concurrency_limit=2)
        async with httpx.AsyncClient(base_url=base_url) as http:
            for n in range(40):
                assert (await send(http, endpoint, f'{{"n": {n}}}'.encode())).status_code == 202
        done = await wait_for(lambda: _all(executions(owner.client, workflow["id"], "succeeded"), 40), timeout=90)
        assert len(done) == 40
        assert len(receiver.to(target)) == 40
        client = await Client.connect(iso.settings.temporal_address)
        # The lane that ran them (the workflow's own automation with lanes off).
        holder = done[0]["temporal"]["workflow_id"]
        runs = [r async for r in client.list_workflows(f"WorkflowId = '{holder}'")]
        assert any(r.status and r.status.name == "CONTINUED_AS_NEW" for r in runs)
        # Every run, the first and those continued as new, gives a lost worker's task away in 4 s.
        for run in runs:
            described = await client.get_workflow_handle(run.id, run_id=run.run_id).describe()
            assert described.raw_description.execution_config.default_workflow_task_timeout.seconds == 4
        await owner.client.aclose()
