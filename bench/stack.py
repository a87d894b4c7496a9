"""The end-to-end stack of bench/cost.py and bench/latency.py, with the measurements they share.

PostgreSQL (fsync on), Redis, the Temporal dev server (SQLite file) and the receiver, then
`hookyard serve`, `dispatch` and `worker` as in bench/e2e.py. Optionally each app process
reaches PostgreSQL through its own listener of a round-trip counting proxy (bench/pgcount.py),
run on a thread of this process so the synchronous orchestration can go on meanwhile.
"""

from __future__ import annotations

import asyncio
import sys
import threading
import time
from collections import Counter
from collections.abc import Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

import httpx
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client

from bench.common import (
    Processes,
    Route,
    create_routes,
    hookyard_argv,
    master_key,
    post_all,
    python_module,
    signed_requests,
    wait_http,
    wait_until,
)
from bench.pgcount import CountingProxy
from hookyard import services
from oauth.crypto import Keyring
from schemas import db
from schemas.migrate import migrate

T = TypeVar("T")
TASK_QUEUE = "hookyard-bench"

# Billable Temporal "actions" as history events: starts (also continue-as-new and children),
# signals, activities, timers, markers (local activities, side effects), search attributes.
ACTION_EVENTS = {
    EventType.EVENT_TYPE_WORKFLOW_EXECUTION_STARTED,
    EventType.EVENT_TYPE_WORKFLOW_EXECUTION_SIGNALED,
    EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED,
    EventType.EVENT_TYPE_TIMER_STARTED,
    EventType.EVENT_TYPE_START_CHILD_WORKFLOW_EXECUTION_INITIATED,
    EventType.EVENT_TYPE_SIGNAL_EXTERNAL_WORKFLOW_EXECUTION_INITIATED,
    EventType.EVENT_TYPE_MARKER_RECORDED,
    EventType.EVENT_TYPE_UPSERT_WORKFLOW_SEARCH_ATTRIBUTES,
}
# Round trips between the worker and the server: each task is one dispatch and one completion.
TASK_EVENTS = {EventType.EVENT_TYPE_WORKFLOW_TASK_STARTED, EventType.EVENT_TYPE_ACTIVITY_TASK_STARTED}


class Loop:
    """An event loop on a thread of its own (for the counting proxy)."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="bench-loop", daemon=True)
        self._thread.start()

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run `coro` on the loop's thread and wait for its result."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result()

    def close(self) -> None:
        """Stop the loop (its thread is a daemon and ends with it)."""
        self.loop.call_soon_threadsafe(self.loop.stop)


@dataclass
class Stack:
    """A running stack: servers, receiver, the routes, and the hookyard processes."""

    procs: Processes
    database_url: str
    temporal_address: str
    receiver: str
    routes: list[Route]
    env: dict[str, str]
    port: int
    proxy: CountingProxy | None = None
    loop: Loop | None = None
    apps: dict[str, services.ManagedProcess] = field(default_factory=dict)
    # Run the apps from this source tree (e.g. an earlier revision) instead of this one.
    tree: str | None = None
    _warm: int = 0

    def app_env(self, name: str, **extra: str) -> dict[str, str]:
        """The environment of one app process: through its own proxy listener when counting."""
        env = {**self.env, **extra}
        if self.proxy is not None and self.loop is not None:
            port = self.loop.run(self.proxy.listen(name))
            parts = urlsplit(self.database_url)
            netloc = parts.netloc.rsplit("@", 1)
            host = f"127.0.0.1:{port}"
            env["DATABASE_URL"] = urlunsplit(parts._replace(netloc=f"{netloc[0]}@{host}" if len(netloc) > 1 else host))
        return env

    def start_app(self, name: str, *args: str, **extra: str) -> services.ManagedProcess:
        """Start `hookyard <name> [args]` (counted as `name` for CPU and round trips)."""
        argv, env = [*hookyard_argv(name), *args], self.app_env(name, **extra)
        if self.tree is not None:  # -P: the tree, not the working directory, first on the import path
            argv = [sys.executable, "-P", "-m", "hookyard.cli", name, *args]
            env["PYTHONPATH"] = str(Path(self.tree).resolve())
        proc = self.procs.spawn(name, argv, env)
        self.apps[name] = proc
        if name == "serve":
            wait_http(f"http://127.0.0.1:{self.port}/readyz", proc)
        return proc

    def stop_app(self, name: str) -> None:
        """SIGTERM one app process (its group) and wait for it."""
        self.procs.stop(self.apps.pop(name))

    def round_trips(self) -> dict[str, int]:
        """PostgreSQL round trips so far, per app process name (empty when not counting)."""
        return dict(self.proxy.counts) if self.proxy is not None else {}

    async def warm_up(self) -> None:
        """One event per workflow, until executed: caches filled, automations started."""
        ids = [f"warm-{self._warm}-{n}" for n in range(len(self.routes))]
        self._warm += 1
        before, _ = await executions_done(self.database_url)
        await post_all(self.port, signed_requests(self.routes, ids), 8)
        await wait_until(lambda: succeeded(self.database_url, before + len(ids)), 120, interval=0.1)

    def close(self) -> None:
        """Stop the proxy (the processes are stopped by `procs.close()`)."""
        if self.proxy is not None and self.loop is not None:
            self.loop.run(self.proxy.close())
        if self.loop is not None:
            self.loop.close()


def start_stack(
    work: Path, procs: Processes, workflows: int, concurrency_limit: int, *, count_round_trips: bool
) -> Stack:
    """Servers, receiver and routes (no hookyard process yet: see `Stack.start_app`)."""
    database_url = procs.add_service(*services.start_postgres(work, services.free_port(), durable=True))
    redis_url = procs.add_service(*services.start_redis(work, services.free_port()))
    temporal_address = procs.add_service(*services.start_temporal(work, services.free_port()))
    asyncio.run(migrate(database_url))
    receiver_port = services.free_port()
    receiver = f"http://127.0.0.1:{receiver_port}"
    wait_http(
        f"{receiver}/stats", procs.spawn("receiver", python_module("bench.receiver", "--port", str(receiver_port)))
    )
    kid, key, keys_env = master_key()
    fixture = create_routes(database_url, Keyring([(kid, key)]), workflows, f"{receiver}/r", concurrency_limit)
    _, routes = asyncio.run(fixture)
    port = services.free_port()
    env = {
        "DATABASE_URL": database_url,
        "REDIS_URL": redis_url,
        "TEMPORAL_ADDRESS": temporal_address,
        "HOOKYARD_PORT": str(port),
        "HOOKYARD_MASTER_KEYS": keys_env,
        "HOOKYARD_TASK_QUEUE": TASK_QUEUE,
        "HOOKYARD_LOG_LEVEL": "WARNING",
        "HOOKYARD_WORKER_GRACEFUL_SHUTDOWN_S": "5",
        "HOOKYARD_EGRESS_ALLOW": f"127.0.0.1:{receiver_port}",  # the local receiver only
    }
    stack = Stack(procs, database_url, temporal_address, receiver, routes, env, port)
    if count_round_trips:
        stack.loop = Loop()
        stack.proxy = CountingProxy(urlsplit(database_url).port or 5432)
    return stack


async def executions_done(database_url: str) -> tuple[int, int]:
    """(succeeded, failed or cancelled) executions."""
    conn = await db.connect(database_url)
    try:
        row = await conn.fetchrow(
            "SELECT count(*) FILTER (WHERE status = 'succeeded') AS ok, "
            "count(*) FILTER (WHERE status IN ('failed', 'cancelled')) AS bad FROM executions"
        )
    finally:
        await conn.close()
    return int(row["ok"]), int(row["bad"])


async def succeeded(database_url: str, expected: int) -> bool:
    """True once `expected` executions succeeded; fails at once if any failed."""
    ok, bad = await executions_done(database_url)
    if bad:
        raise RuntimeError(f"{bad} executions failed; see the worker log")
    return ok >= expected


async def temporal_counts(address: str, since: float, until: float) -> Counter[str]:
    """Temporal history events of every workflow recorded in [since, until] (wall clock, s):
    `actions` (ACTION_EVENTS), `tasks` (TASK_EVENTS) and `events` (all)."""
    client = await Client.connect(address)
    counts: Counter[str] = Counter()
    async for execution in client.list_workflows():
        handle = client.get_workflow_handle(execution.id, run_id=execution.run_id)
        async for event in handle.fetch_history_events():
            at = event.event_time.seconds + event.event_time.nanos / 1e9
            if since <= at <= until:
                counts["events"] += 1
                counts["actions"] += event.event_type in ACTION_EVENTS
                counts["tasks"] += event.event_type in TASK_EVENTS
    return counts


async def receiver_stats(receiver: str) -> dict[str, int]:
    """Requests the receiver got, and distinct ids."""
    async with httpx.AsyncClient(timeout=30) as http:
        stats: dict[str, int] = (await http.get(f"{receiver}/stats")).json()
    return stats


def wall_clock() -> float:
    """Wall-clock seconds (Temporal history times and receiver arrivals are wall clock)."""
    return time.time()
