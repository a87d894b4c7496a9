"""Notification latency: an execution's status change -> the signed callback received.

One stack (bench/stack.py) with `hookyard serve`, `dispatch` and `worker`, one workflow and a
subscription to `execution.succeeded` pointing at a receiver inside this process. Events are
sent at a steady low rate (`--rate`, default 2/s, an idle stack rather than a loaded one); for
each callback the latency is its arrival (wall clock) minus the execution's `finished_at`
(PostgreSQL's clock, the same machine), carried in the notification itself. Every callback is
verified with the official `standardwebhooks` library and counted once per `webhook-id`.

Reported: p50, p95, max, and how many callbacks arrived (each exactly once).

Run: `python -m bench.notify_latency [--events N] [--rate R]`.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a file: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx
from aiohttp import web
from standardwebhooks import Webhook

from bench.common import (
    Processes,
    Route,
    exit_on_sigterm,
    percentile,
    post_all,
    print_table,
    signed_requests,
    write_results,
)
from bench.stack import Stack, start_stack
from hookyard import services
from schemas import db
from schemas.store.owners import create_key


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=60, help="executions to notify about (default 60)")
    parser.add_argument("--rate", type=float, default=2.0, help="events per second (default 2)")
    return parser.parse_args()


class Callbacks:
    """The receiving side: verifies each callback and keeps its latency, once per webhook-id."""

    def __init__(self) -> None:
        self.secret = ""
        self.latency_s: dict[str, float] = {}
        self.duplicates = 0
        self.bad = 0

    async def handle(self, request: web.Request) -> web.Response:
        arrived = time.time()
        body = await request.read()
        try:
            payload: dict[str, Any] = Webhook(self.secret).verify(body, dict(request.headers))
        except Exception:
            self.bad += 1
            return web.Response(status=401)
        msg_id = request.headers["webhook-id"]
        if msg_id in self.latency_s:
            self.duplicates += 1
        else:
            finished = datetime.fromisoformat(payload["data"]["execution"]["finished_at"]).timestamp()
            self.latency_s[msg_id] = arrived - finished
        return web.Response(status=204)


async def serve_callbacks(callbacks: Callbacks, port: int) -> web.AppRunner:
    app = web.Application()
    app.router.add_post("/callbacks", callbacks.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    return runner


async def subscribe(api: str, database_url: str, target: str) -> str:
    """A subscription of the bench owner to execution.succeeded; its secret."""
    conn = await db.connect(database_url)
    try:
        owner_id = await conn.fetchval("SELECT owner_id FROM workflows WHERE NOT internal LIMIT 1")
        _, key = await create_key(conn, owner_id, "notify-latency")
    finally:
        await conn.close()
    async with httpx.AsyncClient(base_url=api, headers={"authorization": f"Bearer {key}"}, timeout=30) as http:
        answer = await http.post(
            "/api/subscriptions", json={"target_url": target, "event_types": ["execution.succeeded"]}
        )
        answer.raise_for_status()
        secret: str = answer.json()["secret"]
    return secret


async def measure(port: int, routes: list[Route], callbacks: Callbacks, args: argparse.Namespace) -> None:
    """Send events at the rate (one at a time, each on its schedule), then wait for every callback."""
    requests = signed_requests(routes, [f"n-{n}" for n in range(args.events)])
    started = time.monotonic()
    for n, raw in enumerate(requests):
        statuses = await post_all(port, [raw], 1)
        if set(statuses) != {"202"}:
            raise SystemExit(f"ingest answered {statuses}")
        await asyncio.sleep(max(0.0, started + (n + 1) / args.rate - time.monotonic()))
    deadline = time.monotonic() + 120
    while len(callbacks.latency_s) < args.events and time.monotonic() < deadline:
        await asyncio.sleep(0.2)
    await asyncio.sleep(2.0)  # late duplicates would show here


def main() -> None:
    exit_on_sigterm()
    args = parse_args()
    work = Path(tempfile.mkdtemp(prefix="hookyard-notify-"))
    procs = Processes(work)
    callback_port = services.free_port()
    try:
        stack = start_stack(work, procs, 1, 10, count_round_trips=False)
        stack.env["HOOKYARD_EGRESS_ALLOW"] += f",127.0.0.1:{callback_port}"
        for name in ("serve", "dispatch", "worker"):
            stack.start_app(name)
        asyncio.run(_run(stack, callback_port, args))
    finally:
        procs.close()
        shutil.rmtree(work, ignore_errors=True)


async def _run(stack: Stack, callback_port: int, args: argparse.Namespace) -> None:
    callbacks = Callbacks()
    runner = await serve_callbacks(callbacks, callback_port)
    try:
        api = f"http://127.0.0.1:{stack.port}"
        callbacks.secret = await subscribe(api, stack.database_url, f"http://127.0.0.1:{callback_port}/callbacks")
        await stack.warm_up()  # caches filled, lanes started; its own notifications are left out
        await asyncio.sleep(3.0)
        warm = set(callbacks.latency_s)
        await measure(stack.port, stack.routes, callbacks, args)
        report(callbacks, warm, args)
    finally:
        await runner.cleanup()


def report(callbacks: Callbacks, warm: set[str], args: argparse.Namespace) -> None:
    latencies = [v * 1000 for k, v in callbacks.latency_s.items() if k not in warm]
    if not latencies:
        raise SystemExit("no callback arrived")
    rows = [
        (
            "status change -> callback",
            len(latencies),
            round(percentile(latencies, 50), 1),
            round(percentile(latencies, 95), 1),
            round(max(latencies), 1),
        )
    ]
    print_table(("measure (ms)", "callbacks", "p50", "p95", "max"), rows)
    print(f"expected {args.events}; duplicates {callbacks.duplicates}; failed verification {callbacks.bad}")
    write_results(
        "notify_latency",
        {
            "events": args.events,
            "rate": args.rate,
            "callbacks": len(latencies),
            "p50_ms": percentile(latencies, 50),
            "p95_ms": percentile(latencies, 95),
            "max_ms": max(latencies),
            "duplicates": callbacks.duplicates,
        },
    )


if __name__ == "__main__":
    main()
