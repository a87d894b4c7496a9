"""hookyard's own processes (`serve`, `dispatch`, `worker`) run as real subprocesses, as deployed.

A `Deployment` gets a private database and task queue on the session's servers, so signals
and crashes aimed at its processes cannot disturb other tests. Each process names itself to
PostgreSQL (`application_name`), so a test can see which replica holds which lock.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import httpx

from hookyard import services
from schemas import db
from schemas.migrate import migrate
from schemas.store.owners import create_owner
from tests.conftest import MASTER_KEY, Receiver, Stack, wait_for
from tests.factories import signed

ROOT = Path(__file__).resolve().parent.parent
# What each process logs (at INFO) once it is doing its job; serve answers /readyz instead.
_STARTED = {"dispatch": "dispatcher running", "worker": "worker polling task queue"}


@dataclass
class AppProcess:
    """One hookyard process; `name` is also its PostgreSQL application_name."""

    kind: str
    name: str
    popen: subprocess.Popen[bytes]
    log_path: Path
    port: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def alive(self) -> bool:
        return self.popen.poll() is None

    def terminate(self) -> None:
        """SIGTERM to the process itself, as a container runtime sends it to PID 1."""
        with contextlib.suppress(ProcessLookupError):
            self.popen.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        """SIGKILL the process and anything it started (a crash)."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.popen.pid, signal.SIGKILL)

    async def exit_code(self, timeout: float) -> int:
        """Its exit status once it exits (without blocking the loop); fails after `timeout`."""
        deadline = asyncio.get_running_loop().time() + timeout
        while (code := self.popen.poll()) is None:
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError(f"{self.name} still running {timeout}s after the signal:\n{self.log_tail()}")
            await asyncio.sleep(0.05)
        return code

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def log_tail(self, lines: int = 30) -> str:
        return "\n".join(self.log().splitlines()[-lines:])


@dataclass
class Deployment:
    """A private hookyard deployment: its database, task queue and processes."""

    stack: Stack
    database_url: str
    task_queue: str
    log_dir: Path
    pool: asyncpg.Pool
    env_overrides: dict[str, str] = field(default_factory=dict)
    processes: list[AppProcess] = field(default_factory=list)
    _numbers: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    def env(self, name: str) -> dict[str, str]:
        """The environment a process of this deployment runs with."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("HOOKYARD_")}
        env.update(
            {
                # asyncpg passes unknown DSN parameters on as server settings.
                "DATABASE_URL": f"{self.database_url}?application_name={name}",
                "REDIS_URL": self.stack.redis_url,
                "TEMPORAL_ADDRESS": self.stack.temporal_address,
                "HOOKYARD_TASK_QUEUE": self.task_queue,
                "HOOKYARD_MASTER_KEYS": f"test:{base64.b64encode(MASTER_KEY).decode()}",
                "HOOKYARD_HOST": "127.0.0.1",
                "HOOKYARD_DISPATCH_POLL_INTERVAL_S": "0.2",
                "HOOKYARD_LOG_LEVEL": "INFO",
                "HOOKYARD_EGRESS_ALLOW": "127.0.0.0/8,::1",
                **self.env_overrides,
            }
        )
        return env

    def spawn(self, kind: str, **env: str) -> AppProcess:
        """Start `hookyard <kind>` (serve, dispatch or worker); see `started` to wait for it."""
        name = f"{kind}-{next(self._numbers)}"
        environ = {**self.env(name), **env}
        port = services.free_port() if kind == "serve" else 0
        if port:
            environ["HOOKYARD_PORT"] = str(port)
        log_path = self.log_dir / f"{name}.log"
        with log_path.open("ab") as out:
            popen = subprocess.Popen(
                [sys.executable, "-m", "hookyard.cli", kind],
                env=environ,
                cwd=ROOT,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        proc = AppProcess(kind, name, popen, log_path, port)
        self.processes.append(proc)
        return proc

    async def started(self, *procs: AppProcess, timeout: float = 60.0) -> None:
        """Wait until each process is doing its job (the api ready, the others polling)."""

        async def ready(proc: AppProcess) -> bool:
            assert proc.alive(), f"{proc.name} exited with {proc.popen.returncode}:\n{proc.log_tail()}"
            if proc.kind != "serve":
                return _STARTED[proc.kind] in proc.log()
            try:
                async with httpx.AsyncClient(timeout=2) as http:
                    return (await http.get(f"{proc.url}/readyz")).status_code == 200
            except httpx.HTTPError:
                return False

        for proc in procs:
            await wait_for(lambda p=proc: ready(p), timeout=timeout, interval=0.2)

    async def start(self, kind: str, count: int = 1) -> list[AppProcess]:
        """Spawn `count` processes of a kind and wait until they run."""
        procs = [self.spawn(kind) for _ in range(count)]
        await self.started(*procs)
        return procs

    def stop_all(self) -> None:
        for proc in self.processes:
            if proc.alive():
                proc.kill()
        for proc in self.processes:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.popen.wait(5)


@contextlib.asynccontextmanager
async def deployment(stack: Stack, **env: str) -> AsyncIterator[Deployment]:
    """A fresh database (migrated) and task queue; every process started in it is killed after."""
    name = f"procs_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(stack.database_url)
    try:
        await admin.execute(f"CREATE DATABASE {name}")
    finally:
        await admin.close()
    url = stack.database_url.rsplit("/", 1)[0] + f"/{name}"
    await migrate(url)
    pool = await db.create_pool(url, min_size=1, max_size=4)
    log_dir = Path(tempfile.mkdtemp(prefix="hookyard-procs-"))
    deploy = Deployment(stack, url, name, log_dir, pool, dict(env))
    try:
        yield deploy
    finally:
        deploy.stop_all()
        await pool.close()
        shutil.rmtree(log_dir, ignore_errors=True)


async def owner_client(deploy: Deployment, api: AppProcess) -> httpx.AsyncClient:
    """A new owner's API client, talking to one api process."""
    async with deploy.pool.acquire() as conn:
        _, key = await create_owner(conn, "acme")
    return httpx.AsyncClient(base_url=api.url, headers={"authorization": f"Bearer {key}"}, timeout=30)


@dataclass
class Load:
    """Signed webhooks sent steadily to whichever api processes are in `targets`.

    Like a real sender, a delivery that gets no 2xx (refused connection, reset, 5xx) is retried
    with the same message id on the next target, so every message should end up acknowledged.
    """

    endpoint: dict[str, Any]
    targets: list[str]
    senders: int = 4
    pause_s: float = 0.05
    acknowledged: dict[str, str] = field(default_factory=dict)  # message id -> event id
    retried: int = 0
    _stop: asyncio.Event = field(default_factory=asyncio.Event)
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)
    _turn: itertools.count[int] = field(default_factory=itertools.count)

    def start(self) -> None:
        self._tasks = [asyncio.create_task(self._sender()) for _ in range(self.senders)]

    async def stop(self) -> None:
        """Stop sending new messages; messages in flight are delivered first."""
        self._stop.set()
        await asyncio.gather(*self._tasks)

    async def until(self, count: int, timeout: float = 60.0) -> None:
        """Wait until at least `count` messages in total have been acknowledged."""

        async def enough() -> bool:
            for task in self._tasks:
                if task.done():
                    task.result()
            return len(self.acknowledged) >= count

        await wait_for(enough, timeout=timeout)

    async def _sender(self) -> None:
        async with httpx.AsyncClient(timeout=30) as http:
            while not self._stop.is_set():
                await self._deliver(http, uuid.uuid4().hex)
                await asyncio.sleep(self.pause_s)

    async def _deliver(self, http: httpx.AsyncClient, msg_id: str) -> None:
        body = f'{{"msg": "{msg_id}"}}'.encode()
        for attempt in range(200):
            target = self.targets[next(self._turn) % len(self.targets)]
            headers = signed(self.endpoint["scheme"], self.endpoint["secret"], body, msg_id)
            try:
                response = await http.post(f"{target}/hooks/{self.endpoint['id']}", content=body, headers=headers)
            except httpx.TransportError:
                response = None
            if response is not None and response.status_code in (200, 202):
                self.acknowledged[msg_id] = response.json()["event_id"]
                return
            assert response is None or response.status_code >= 500, response.text
            self.retried += 1
            await asyncio.sleep(min(0.05 * (attempt + 1), 0.5))
        raise AssertionError(f"message {msg_id} was never acknowledged")


async def settled(pool: asyncpg.Pool, event_ids: Iterable[str], workflows: int, timeout: float = 90.0) -> None:
    """Wait until every one of these events is resolved and each of its executions has finished."""
    ids = [uuid.UUID(e) for e in event_ids]

    async def done() -> bool:
        async with pool.acquire() as conn:
            waiting = await conn.fetchval(
                "SELECT count(*) FROM events WHERE id = ANY($1::uuid[]) AND status = 'received'", ids
            )
            finished = await conn.fetchval(
                "SELECT count(*) FROM executions WHERE event_id = ANY($1::uuid[]) "
                "AND status IN ('succeeded', 'failed', 'cancelled')",
                ids,
            )
        return bool(waiting == 0 and finished >= len(ids) * workflows)

    await wait_for(done, timeout=timeout, interval=0.25)


async def assert_ran_exactly_once(
    pool: asyncpg.Pool, receiver: Receiver, event_ids: Iterable[str], workflow_paths: dict[str, str]
) -> list[asyncpg.Record]:
    """Each event has one succeeded execution per workflow, and its target got that execution once.

    `workflow_paths` maps workflow id -> the receiver path its action posts to. Returns the
    executions (for further checks such as attempts).
    """
    ids = sorted({uuid.UUID(e) for e in event_ids})
    async with pool.acquire() as conn:
        stored = await conn.fetchval("SELECT count(*) FROM events WHERE id = ANY($1::uuid[])", ids)
        rows: list[asyncpg.Record] = await conn.fetch(
            "SELECT id, workflow_id, event_id, status, attempts, error FROM executions "
            "WHERE event_id = ANY($1::uuid[])",
            ids,
        )
    assert stored == len(ids), f"{len(ids) - stored} acknowledged events are missing"
    pairs = Counter((str(r["workflow_id"]), r["event_id"]) for r in rows)
    expected = {(w, e) for w in workflow_paths for e in ids}
    assert set(pairs) == expected, f"{len(expected - set(pairs))} missing, {len(set(pairs) - expected)} unexpected"
    assert max(pairs.values()) == 1, "an event has two executions for one workflow"
    failed = [dict(r) for r in rows if r["status"] != "succeeded"]
    assert not failed, f"{len(failed)} executions did not succeed, e.g. {failed[0]}"
    for workflow_id, path in workflow_paths.items():
        wanted = {str(r["id"]) for r in rows if str(r["workflow_id"]) == workflow_id}
        # Other events' executions may share the target; only these ones are counted.
        keys = Counter(k for r in receiver.to(path) if (k := r.headers["idempotency-key"]) in wanted)
        twice = [k for k, n in keys.items() if n > 1]
        assert not twice, f"{len(twice)} executions of workflow {workflow_id} reached the target twice or more"
        assert set(keys) == wanted, f"target {path}: {len(wanted - set(keys))} executions never arrived"
    return rows


async def unhandled(pool: asyncpg.Pool) -> tuple[int, int]:
    """Events still in the inbox and executions never handed to Temporal (both 0 when settled)."""
    async with pool.acquire() as conn:
        events = await conn.fetchval("SELECT count(*) FROM events WHERE status = 'received'")
        executions = await conn.fetchval(
            "SELECT count(*) FROM executions WHERE signalled_at IS NULL AND status = 'queued'"
        )
    return int(events), int(executions)


async def waiting_on_lock(pool: asyncpg.Pool, proc: AppProcess) -> bool:
    """True while one of the process's database sessions waits for a row lock."""
    async with pool.acquire() as conn:
        found = await conn.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
            "AND application_name = $1 AND wait_event_type = 'Lock'",
            proc.name,
        )
    return bool(found)


async def refuses_connections(proc: AppProcess) -> bool:
    """True once nothing accepts connections on the api process's port."""
    try:
        _, writer = await asyncio.open_connection("127.0.0.1", proc.port)
    except OSError:
        return True
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return False
