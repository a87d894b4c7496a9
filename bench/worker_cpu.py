"""Worker CPU per execution: the batch activity against a local receiver and real PostgreSQL.

Runs `AutomationActivities.run_batch` (through temporalio's ActivityEnvironment, so no Temporal
server: the figure is the activity's own cost) for N queued `http.request` executions, `--batch`
executions per batch and `--parallel` batches at a time, as the automation workflows run them.
Reports this process's CPU time (user + system, so it means the same on a shared machine) per
execution and the PostgreSQL round trips per execution, counted by a small proxy process that
counts ReadyForQuery messages (one per statement sync or simple query, pool resets included).

Run: `python -m bench.worker_cpu [--executions 2000] [--batch 10] [--parallel 10] [--profile FILE]`.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import dataclasses
import json
import multiprocessing
import pstats
import shutil
import socket
import struct
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path
from typing import Any
from uuid import UUID

if __package__ in (None, ""):  # run as a file: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import asyncpg
import httpx
from temporalio.converter import DataConverter
from temporalio.testing import ActivityEnvironment

from actions.egress import EgressPolicy, guarded_client
from bench.common import Processes, create_routes, master_key, python_module, wait_http
from hookyard import services
from oauth.crypto import Keyring
from runtime.codec import encrypted_data_converter
from schemas import db
from schemas.migrate import migrate
from settings.egress import parse_allow
from worker.automation.activities import AutomationActivities
from worker.automation.contract import BatchInput, Outcome

# As worker/main.py builds the actions' client.
WORKER_LIMITS = httpx.Limits(max_connections=200, max_keepalive_connections=50)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--executions", type=int, default=2000, help="executions measured (after a warm-up)")
    parser.add_argument("--batch", type=int, default=10, help="executions per batch (a workflow's concurrency)")
    parser.add_argument("--parallel", type=int, default=10, help="batches running at once (workflows)")
    parser.add_argument("--warmup", type=int, default=200, help="executions run first and not counted")
    parser.add_argument(
        "--loop", choices=("asyncio", "uvloop"), default="asyncio", help="event loop (the worker runs asyncio's)"
    )
    parser.add_argument("--profile", metavar="FILE", help="write a cProfile of the measured part to FILE")
    parser.add_argument("--top", type=int, default=25, help="profile lines printed (with --profile)")
    return parser.parse_args()


# ---- the counting proxy: its own process, so its CPU is not the worker's ----


def _proxy_main(listen: socket.socket, upstream_port: int, counter: Any) -> None:
    asyncio.run(_proxy(listen, upstream_port, counter))


async def _proxy(listen: socket.socket, upstream_port: int, counter: Any) -> None:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", upstream_port)
        await asyncio.gather(_pipe(reader, up_writer), _count_pipe(up_reader, writer, counter))

    server = await asyncio.start_server(handle, sock=listen)
    async with server:
        await server.serve_forever()


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while chunk := await reader.read(65536):
            writer.write(chunk)
            await writer.drain()
    except OSError:
        pass
    finally:
        writer.close()


async def _count_pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, counter: Any) -> None:
    """Forward server messages (type byte + int32 length + payload), counting ReadyForQuery."""
    try:
        while True:
            head = await reader.readexactly(5)
            (length,) = struct.unpack("!i", head[1:])
            payload = await reader.readexactly(length - 4)
            if head[:1] == b"Z":
                with counter.get_lock():
                    counter.value += 1
            writer.write(head + payload)
            await writer.drain()
    except (OSError, asyncio.IncompleteReadError):
        pass
    finally:
        writer.close()


def start_proxy(upstream_port: int) -> tuple[multiprocessing.process.BaseProcess, int, Any]:
    """A counting proxy in front of PostgreSQL: (process, its port, the shared round-trip counter)."""
    ctx = multiprocessing.get_context("fork")
    counter = ctx.Value("q", 0)
    listen = socket.socket()
    listen.bind(("127.0.0.1", 0))
    listen.listen(512)
    proc = ctx.Process(target=_proxy_main, args=(listen, upstream_port, counter), daemon=True)
    proc.start()
    port = int(listen.getsockname()[1])
    listen.close()
    return proc, port, counter


# ---- the fixture ----


def _trigger_data(n: int) -> str:
    body = {"type": "order.created", "id": f"evt-{n}", "data": {"order": n, "amount": 4200, "currency": "EUR"}}
    headers = {"content-type": "application/json", "webhook-id": f"msg_evt-{n}", "user-agent": "bench"}
    data = {"event_id": str(n), "endpoint_id": "bench", "received_at": "2026-01-01T00:00:00Z"}
    return json.dumps({**data, "headers": headers, "body": body})


async def queue_batches(
    pool: asyncpg.Pool, owner_id: UUID, workflows: list[UUID], count: int, size: int
) -> list[BatchInput]:
    """`count` queued executions (already handed over), in batches of `size`, round robin over workflows."""
    batches: list[BatchInput] = []
    async with pool.acquire() as conn:
        for start in range(0, count, size):
            workflow_id = workflows[len(batches) % len(workflows)]
            n = min(size, count - start)
            ids = await conn.fetch(
                "INSERT INTO executions (owner_id, workflow_id, trigger_data, signalled_at, status) "
                "SELECT $1, $2, d::jsonb, now(), 'queued' FROM unnest($3::text[]) AS d RETURNING id",
                owner_id,
                workflow_id,
                [_trigger_data(start + i) for i in range(n)],
            )
            batches.append(BatchInput(str(workflow_id), [str(r["id"]) for r in ids]))
    return batches


class Heartbeats:
    """Heartbeats handled as the SDK's worker does: each call schedules a task that encodes (and
    encrypts) the newest pending details, unless a task before it already sent them."""

    def __init__(self, converter: DataConverter) -> None:
        self._converter = converter
        self._pending: tuple[Any, ...] | None = None
        self._lock = asyncio.Lock()
        self._tasks: set[asyncio.Task[None]] = set()
        self.encoded = 0

    def __call__(self, *details: Any) -> None:
        self._pending = details
        task = asyncio.get_running_loop().create_task(self._send())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _send(self) -> None:
        async with self._lock:
            details, self._pending = self._pending, None
            if details:
                await self._converter.encode(details)
                self.encoded += 1


async def run_batches(
    activities: AutomationActivities, batches: list[BatchInput], parallel: int, converter: DataConverter
) -> list[Outcome]:
    """Run the batches, `parallel` at a time, each in its own activity environment."""
    queue = list(reversed(batches))
    outcomes: list[Outcome] = []

    async def lane(n: int) -> None:
        env = ActivityEnvironment()
        env.info = dataclasses.replace(
            env.info,
            heartbeat_timeout=timedelta(seconds=5),
            workflow_id=f"automation-bench-{n}",
            workflow_run_id=f"run-{n}",
        )
        env.on_heartbeat = Heartbeats(converter)
        while queue:
            batch = queue.pop()
            outcomes.extend(await env.run(activities.run_batch, batch))

    await asyncio.gather(*(lane(n) for n in range(parallel)))
    return outcomes


async def measure(
    args: argparse.Namespace, database_url: str, proxied_url: str, counter: Any, receiver: str
) -> dict[str, Any]:
    kid, key, _ = master_key()
    keyring = Keyring([(kid, key)])
    converter = encrypted_data_converter([(kid, key)])
    owner_id, routes = await create_routes(database_url, keyring, args.parallel, f"{receiver}/r", args.batch)
    workflows = [r.workflow_id for r in routes if r.workflow_id is not None]
    admin = await db.create_pool(database_url, min_size=1, max_size=2)
    pool = await db.create_pool(proxied_url, min_size=1, max_size=20)
    port = int(receiver.rsplit(":", 1)[1])
    egress = EgressPolicy(parse_allow(f"127.0.0.1:{port}"))
    try:
        warm = await queue_batches(admin, owner_id, workflows, args.warmup, args.batch)
        timed = await queue_batches(admin, owner_id, workflows, args.executions, args.batch)
        async with guarded_client(egress, limits=WORKER_LIMITS) as http:
            activities = AutomationActivities(pool, http, keyring, egress=egress)
            await run_batches(activities, warm, args.parallel, converter)
            profile = cProfile.Profile() if args.profile else None
            trips0, cpu0, wall0 = counter.value, time.process_time(), time.perf_counter()
            if profile:
                profile.enable()
            outcomes = await run_batches(activities, timed, args.parallel, converter)
            if profile:
                profile.disable()
            cpu, wall, trips = time.process_time() - cpu0, time.perf_counter() - wall0, counter.value - trips0
        done = sum(1 for o in outcomes if o.status == "succeeded")
        async with admin.acquire() as conn:
            recorded = await conn.fetchval(
                "SELECT count(*) FROM executions WHERE id = ANY($1::uuid[]) AND status = 'succeeded'",
                [UUID(i) for b in timed for i in b.execution_ids],
            )
    finally:
        await pool.close()
        await admin.close()
    if profile:
        profile.dump_stats(args.profile)
        pstats.Stats(args.profile).sort_stats("cumulative").print_stats(args.top)
        pstats.Stats(args.profile).sort_stats("tottime").print_stats(args.top)
    n = args.executions
    return {
        "executions": n,
        "succeeded": done,
        "recorded_succeeded": recorded,
        "cpu_us_per_execution": round(cpu / n * 1e6, 1),
        "pg_round_trips_per_execution": round(trips / n, 2),
        "executions_per_s": round(n / wall, 1),
        "wall_s": round(wall, 2),
    }


def main() -> int:
    args = parse_args()
    work = Path(tempfile.mkdtemp(prefix="hookyard-bench-worker-cpu-"))
    procs = Processes(work / "logs")
    proxy = None
    try:
        database_url = procs.add_service(*services.start_postgres(work, services.free_port(), durable=True))
        asyncio.run(migrate(database_url))
        upstream_port = int(database_url.rsplit(":", 1)[1].split("/", 1)[0])
        proxy, proxy_port, counter = start_proxy(upstream_port)
        proxied_url = database_url.replace(f":{upstream_port}/", f":{proxy_port}/")
        proxied_url += ("&" if "?" in proxied_url else "?") + "sslmode=disable"
        receiver_port = services.free_port()
        receiver = f"http://127.0.0.1:{receiver_port}"
        wait_http(
            f"{receiver}/stats", procs.spawn("receiver", python_module("bench.receiver", "--port", str(receiver_port)))
        )
        if args.loop == "uvloop":
            import uvloop  # installed with uvicorn[standard]

            result = uvloop.run(measure(args, database_url, proxied_url, counter, receiver))
        else:
            result = asyncio.run(measure(args, database_url, proxied_url, counter, receiver))
        print(
            f"worker CPU: {result['cpu_us_per_execution']:,.0f} µs per execution, "
            f"{result['pg_round_trips_per_execution']:.2f} PostgreSQL round trips per execution "
            f"({result['executions']} executions, batches of {args.batch}, {args.parallel} at a time, "
            f"{result['executions_per_s']:,.0f}/s; {result['recorded_succeeded']} recorded succeeded)"
        )
        print(json.dumps(result))
        return 0 if result["recorded_succeeded"] == args.executions else 1
    finally:
        if proxy is not None:
            proxy.terminate()
        procs.close()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
