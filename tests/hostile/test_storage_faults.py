"""Exactly once through database faults: a lost write never re-sends an action, and no process
gives up because PostgreSQL went away for a while.

The processes run as real subprocesses in a private database and task queue. Where a fault
must hit one process only, that process reaches PostgreSQL through a proxy the test can cut
or black out (tests/faultproxy.py); the session's PostgreSQL itself is never touched. A test
that restarts PostgreSQL starts a private server for it.
"""

from __future__ import annotations

import asyncio
import dataclasses
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from starlette.applications import Starlette
from starlette.routing import Route
from temporalio.testing import ActivityEnvironment

from actions import registry
from actions.base import ActionContext, ActionType
from hookyard import services
from ingest.errors import EXCEPTION_HANDLERS
from oauth.crypto import Keyring
from schemas.db import is_storage_error
from tests.conftest import Owner, Receiver, Stack, serve, wait_for
from tests.factories import create_endpoint, create_workflow, send
from tests.faultproxy import FaultProxy, fault_proxy
from tests.processes import AppProcess, Deployment, deployment, owner_client
from worker.automation.activities import AutomationActivities
from worker.automation.contract import BatchInput, Outcome

pytestmark = pytest.mark.integration

HEARTBEAT_TIMEOUT_S = "4"


class TriggeringReceiver(Receiver):
    """The action's target; runs `on_request` (once) before it answers, e.g. to cut the database."""

    def __init__(self) -> None:
        super().__init__()
        self.on_request: Callable[[], None] | None = None

    async def app(self, scope: dict, receive, send) -> None:  # type: ignore[no-untyped-def,override]
        hook, self.on_request = self.on_request, None
        if hook is not None and scope["type"] == "http":
            hook()
        await super().app(scope, receive, send)


@pytest.fixture
async def target() -> AsyncIterator[TriggeringReceiver]:
    receiver = TriggeringReceiver()
    async with serve(receiver.app, services.free_port(), lifespan="off") as url:  # type: ignore[arg-type]
        receiver.url = url
        yield receiver


@dataclasses.dataclass
class Site:
    deploy: Deployment
    api: AppProcess
    client: httpx.AsyncClient
    endpoint: dict[str, Any]
    workflow: dict[str, Any]
    path: str

    async def deliver(self, body: bytes) -> str:
        """Send one signed event; returns the event id once it is accepted."""
        async with httpx.AsyncClient(base_url=self.api.url, timeout=30) as http:
            response = await send(http, self.endpoint, body)
        assert response.status_code == 202, response.text
        event_id: str = response.json()["event_id"]
        return event_id

    async def succeeded(self, event_id: str, timeout: float = 60.0) -> asyncpg.Record:
        async def done() -> asyncpg.Record | None:
            async with self.deploy.pool.acquire() as conn:
                row: asyncpg.Record | None = await conn.fetchrow(
                    "SELECT id, status, attempts FROM executions WHERE event_id = $1 AND status = 'succeeded'",
                    uuid.UUID(event_id),
                )
            return row

        row: asyncpg.Record = await wait_for(done, timeout=timeout, interval=0.2)
        return row


async def _site(deploy: Deployment, receiver: Receiver) -> Site:
    [api] = await deploy.start("serve")
    client = await owner_client(deploy, api)
    endpoint = await create_endpoint(client)
    path = f"/faults/{uuid.uuid4().hex}"
    workflow = await create_workflow(client, endpoint["id"], receiver.url + path)
    return Site(deploy, api, client, endpoint, workflow, path)


def _through(proxy: FaultProxy, deploy: Deployment) -> str:
    return proxy.url_for(deploy.database_url)


def _requests(receiver: Receiver, path: str, execution_id: object) -> int:
    return sum(1 for r in receiver.to(path) if r.headers.get("idempotency-key") == str(execution_id))


@pytest.mark.parametrize(
    "error",
    [
        asyncpg.exceptions.InternalClientError("cannot switch to state 15; another operation is in progress"),
        asyncpg.exceptions.ConnectionDoesNotExistError("connection was closed in the middle of operation"),
        asyncpg.exceptions.CannotConnectNowError("the database system is starting up"),
        asyncpg.exceptions.AdminShutdownError("terminating connection due to administrator command"),
        asyncpg.exceptions.QueryCanceledError("canceling statement due to statement timeout"),
        asyncpg.exceptions.TooManyConnectionsError("sorry, too many clients already"),
        asyncpg.exceptions.InterfaceError("pool is closed"),
        asyncpg.exceptions.ReadOnlySQLTransactionError("cannot execute UPDATE in a read-only transaction"),
        ConnectionResetError(104, "Connection reset by peer"),
        TimeoutError(),
    ],
    ids=lambda e: type(e).__name__,
)
def test_database_errors_that_pass_are_storage_errors(error: Exception) -> None:
    assert is_storage_error(error)


@pytest.mark.parametrize(
    "error",
    [
        asyncpg.exceptions.DataError("invalid input"),
        # The client's own DataError (an argument it cannot encode) subclasses InterfaceError.
        asyncpg.exceptions._base.DataError("invalid input for query argument $4"),
        asyncpg.exceptions.UniqueViolationError("dup"),
        ValueError(),
    ],
    ids=lambda e: f"{type(e).__module__}.{type(e).__name__}",
)
def test_errors_of_the_request_itself_are_not_storage_errors(error: Exception) -> None:
    assert not is_storage_error(error)


async def test_a_protocol_state_error_at_ingest_answers_503_with_retry_after() -> None:
    async def store(_request: object) -> None:
        raise asyncpg.exceptions.InternalClientError("cannot switch to state 15; another operation is in progress")

    app = Starlette(routes=[Route("/hooks/x", store, methods=["POST"])], exception_handlers=EXCEPTION_HANDLERS)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as http:
        response = await http.post("/hooks/x", content=b"{}")
    assert response.status_code == 503
    assert response.headers["retry-after"]
    assert response.json()["error"]["code"] == "unavailable"


async def test_ingest_answers_503_with_retry_after_while_its_database_is_cut_off(stack: Stack) -> None:
    async with deployment(stack) as deploy, fault_proxy(deploy.database_url) as proxy:
        api = deploy.spawn("serve", DATABASE_URL=_through(proxy, deploy))
        await deploy.started(api)
        client = await owner_client(deploy, api)
        async with client:
            endpoint = await create_endpoint(client)
        proxy.blackout(5)
        async with httpx.AsyncClient(base_url=api.url, timeout=30) as http:
            response = await send(http, endpoint, b'{"n": 1}')
        assert response.status_code == 503, response.text
        assert response.headers["retry-after"]


async def test_an_action_runs_once_when_the_database_connection_is_cut_right_after_it_succeeded(
    stack: Stack, target: TriggeringReceiver
) -> None:
    async with (
        deployment(stack, HOOKYARD_ACTIVITY_HEARTBEAT_TIMEOUT_S=HEARTBEAT_TIMEOUT_S) as deploy,
        fault_proxy(deploy.database_url) as proxy,
    ):
        site = await _site(deploy, target)
        await deploy.start("dispatch")
        worker = deploy.spawn("worker", DATABASE_URL=_through(proxy, deploy))
        await deploy.started(worker)
        # The target has the request and answers 200, but the worker's database is gone.
        target.on_request = lambda: proxy.blackout(3)
        event_id = await site.deliver(b'{"n": 1}')
        execution = await site.succeeded(event_id)
        await asyncio.sleep(2)  # a re-sent request would arrive by now
        assert _requests(target, site.path, execution["id"]) == 1
        assert execution["attempts"] == 1
        assert worker.alive()
        await site.client.aclose()


async def test_a_retried_batch_records_the_outcome_its_killed_attempt_kept_instead_of_resending(
    stack: Stack, target: TriggeringReceiver
) -> None:
    async with (
        deployment(stack, HOOKYARD_ACTIVITY_HEARTBEAT_TIMEOUT_S=HEARTBEAT_TIMEOUT_S) as deploy,
        fault_proxy(deploy.database_url) as proxy,
    ):
        site = await _site(deploy, target)
        await deploy.start("dispatch")
        worker = deploy.spawn("worker", DATABASE_URL=_through(proxy, deploy))
        await deploy.started(worker)
        target.on_request = lambda: proxy.blackout(12)
        event_id = await site.deliver(b'{"n": 1}')
        await wait_for(lambda: _any(target, site.path), timeout=30)
        # Long enough for the heartbeat that carries the outcome, well inside the blackout.
        await asyncio.sleep(5)
        worker.kill()
        await deploy.started(deploy.spawn("worker", DATABASE_URL=_through(proxy, deploy)), timeout=60)
        execution = await site.succeeded(event_id)
        await asyncio.sleep(2)
        assert _requests(target, site.path, execution["id"]) == 1
        assert execution["attempts"] == 1
        await site.client.aclose()


async def test_dispatcher_and_worker_keep_running_through_a_5s_database_blackout(
    stack: Stack, target: TriggeringReceiver
) -> None:
    async with deployment(stack) as deploy, fault_proxy(deploy.database_url) as proxy:
        site = await _site(deploy, target)
        dispatcher = deploy.spawn("dispatch", DATABASE_URL=_through(proxy, deploy))
        worker = deploy.spawn("worker", DATABASE_URL=_through(proxy, deploy))
        await deploy.started(dispatcher, worker)
        before = await site.succeeded(await site.deliver(b'{"n": 1}'))
        proxy.blackout(5)
        during = await site.deliver(b'{"n": 2}')  # the api's own connections are not cut
        for _ in range(10):  # live connections made meanwhile are cut too
            await asyncio.sleep(0.5)
            proxy.cut()
        await asyncio.sleep(1)
        assert dispatcher.alive(), dispatcher.log_tail()
        assert worker.alive(), worker.log_tail()
        after = await site.deliver(b'{"n": 3}')
        for execution in [before, await site.succeeded(during), await site.succeeded(after)]:
            assert _requests(target, site.path, execution["id"]) == 1
        assert dispatcher.alive() and worker.alive()
        await site.client.aclose()


@pytest.fixture
async def private_postgres(tmp_path: Path) -> AsyncIterator[PrivatePostgres]:
    server = PrivatePostgres(tmp_path, services.free_port())
    server.start()
    try:
        yield server
    finally:
        server.kill()


class PrivatePostgres:
    """A PostgreSQL server of this test's own, so it can be killed and restarted."""

    def __init__(self, data_dir: Path, port: int) -> None:
        self.data_dir = data_dir
        self.port = port
        self.process: services.ManagedProcess | None = None
        self.url = ""

    def start(self) -> None:
        # Durable: it is killed -9, and what it acknowledged must survive that, as in production.
        self.process, self.url = services.start_postgres(self.data_dir, self.port)

    def kill(self) -> None:
        if self.process is not None and self.process.alive():
            self.process.kill()


async def test_dispatcher_and_worker_keep_running_through_a_postgres_restart(
    stack: Stack, private_postgres: PrivatePostgres, target: TriggeringReceiver
) -> None:
    own = dataclasses.replace(stack, database_url=private_postgres.url)
    async with deployment(own) as deploy:
        site = await _site(deploy, target)
        dispatcher, worker = await deploy.start("dispatch"), await deploy.start("worker")
        before = await site.succeeded(await site.deliver(b'{"n": 1}'))
        await deploy.pool.expire_connections()
        private_postgres.kill()
        await asyncio.sleep(2)
        private_postgres.start()
        after = await site.succeeded(await site.deliver(b'{"n": 2}'))
        for execution in (before, after):
            assert _requests(target, site.path, execution["id"]) == 1
        assert dispatcher[0].alive(), dispatcher[0].log_tail()
        assert worker[0].alive(), worker[0].log_tail()
        await site.client.aclose()


async def test_a_worker_started_while_postgres_is_down_waits_and_then_works(
    stack: Stack, private_postgres: PrivatePostgres, target: TriggeringReceiver
) -> None:
    own = dataclasses.replace(stack, database_url=private_postgres.url)
    async with deployment(own) as deploy:
        site = await _site(deploy, target)
        await deploy.pool.expire_connections()
        private_postgres.kill()
        worker = deploy.spawn("worker")
        await wait_for(lambda: _logged(worker, "waiting for PostgreSQL"), timeout=30)
        await asyncio.sleep(2)
        assert worker.alive(), worker.log_tail()
        private_postgres.start()
        await deploy.started(worker)
        await deploy.start("dispatch")
        execution = await site.succeeded(await site.deliver(b'{"n": 1}'))
        assert _requests(target, site.path, execution["id"]) == 1
        await site.client.aclose()


async def _any(receiver: Receiver, path: str) -> bool:
    return bool(receiver.to(path))


async def _logged(proc: AppProcess, text: str) -> bool:
    assert proc.alive(), proc.log_tail()
    return text in proc.log()


async def _deep_result(ctx: ActionContext, config: object) -> dict[str, Any]:
    deep: list[Any] = []
    for _ in range(100_000):  # beyond any recursion limit and any JSON encoder's depth
        deep = [deep]
    return {"deep": deep}


async def _queued(pool: asyncpg.Pool, owner: Owner, workflow_id: str, status: str = "queued") -> str:
    """An execution row the dispatcher has already handed over (so no dispatcher takes it)."""
    async with pool.acquire() as conn:
        execution_id = await conn.fetchval(
            "INSERT INTO executions (owner_id, workflow_id, trigger_data, signalled_at, status, attempts) "
            "VALUES ($1, $2, '{}'::jsonb, now(), $3, $4) RETURNING id",
            uuid.UUID(owner.id),
            uuid.UUID(workflow_id),
            status,
            1 if status == "running" else 0,
        )
    return str(execution_id)


async def _status(pool: asyncpg.Pool, execution_id: str) -> asyncpg.Record:
    async with pool.acquire() as conn:
        row: asyncpg.Record = await conn.fetchrow(
            "SELECT status, attempts, result, error FROM executions WHERE id = $1", uuid.UUID(execution_id)
        )
    return row


async def test_an_execution_whose_result_cannot_be_handled_fails_alone_not_its_batch(
    pool: asyncpg.Pool, keyring: Keyring, owner: Owner, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(registry.ACTIONS, "test.deep", ActionType("test.deep", "deep result", {}, _deep_result))  # type: ignore[index]
    endpoint = await create_endpoint(owner.client)
    path = f"/isolated/{uuid.uuid4().hex}"
    healthy = await create_workflow(owner.client, endpoint["id"], receiver.url + path)
    poisoned = await create_workflow(owner.client, endpoint["id"], receiver.url + path)
    async with pool.acquire() as conn:
        await conn.execute("UPDATE workflows SET action_type = 'test.deep' WHERE id = $1", uuid.UUID(poisoned["id"]))
    ok, bad = await _queued(pool, owner, healthy["id"]), await _queued(pool, owner, poisoned["id"])
    async with httpx.AsyncClient() as http:
        activities = AutomationActivities(pool, http, keyring)
        outcomes = await ActivityEnvironment().run(activities.run_batch, BatchInput(healthy["id"], [ok, bad]))
    assert outcomes[0] == Outcome(ok, "succeeded")
    # Retried or failed with a reason, or recorded without what could not be stored: decided alone.
    assert outcomes[1].execution_id == bad and outcomes[1].status in ("retry", "failed", "succeeded")
    assert (await _status(pool, ok))["status"] == "succeeded"
    # Recorded one way or another (a result too deep to store is clipped by the sanitiser).
    assert (await _status(pool, bad))["status"] in ("running", "failed", "succeeded")
    assert _requests(receiver, path, ok) == 1


async def test_a_retried_batch_writes_the_outcome_kept_in_its_heartbeat_and_runs_nothing_again(
    pool: asyncpg.Pool, keyring: Keyring, owner: Owner, receiver: Receiver
) -> None:
    endpoint = await create_endpoint(owner.client)
    path = f"/kept/{uuid.uuid4().hex}"
    workflow = await create_workflow(owner.client, endpoint["id"], receiver.url + path)
    # The first attempt sent the request and kept its outcome, but never wrote it.
    done = await _queued(pool, owner, workflow["id"], status="running")
    kept = {"id": done, "status": "succeeded", "error": None, "result": {"status_code": 200}, "retry_in_s": None}
    env = ActivityEnvironment()
    env.info = dataclasses.replace(env.info, heartbeat_details=[[kept]], attempt=2)
    async with httpx.AsyncClient() as http:
        activities = AutomationActivities(pool, http, keyring)
        outcomes = await env.run(activities.run_batch, BatchInput(workflow["id"], [done]))
    assert outcomes == [Outcome(done, "succeeded")]
    row = await _status(pool, done)
    assert (row["status"], row["attempts"], row["result"]) == ("succeeded", 1, {"status_code": 200})
    assert receiver.to(path) == []
