"""Latency under load: webhook -> action at a steady rate of half the measured maximum.

One stack (bench/stack.py). First the maximum: N events as fast as 32 connections send them,
timed until all executed (as bench/e2e.py (a)). Then an open-loop sender: event i is due at
t0 + i / rate, with rate = half that maximum (or `--rate`), for `--duration` seconds. Each
request goes out at its due time on a free keep-alive connection (a new one if none is free),
whatever happened to the earlier ones, so a stall of the server delays the answers but not the
sending. Latency is measured from the **scheduled** send time, not the actual one, to the
receiver getting the action's request (matched by the event id the action templates into its
body): a stall cannot hide by holding the sender back ("coordinated omission").

Reported: p50, p90, p99 and max of webhook -> action, of webhook -> 2xx answer, how late the
sender itself was (if it fell behind its schedule the run says so), and CPU per process.

Run: `python -m bench.latency [--duration S] [--rate R] [--workflows K] [--worker-processes P]`.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a file: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx

from bench.common import (
    Processes,
    cpu_share,
    disturbance_note,
    exit_on_sigterm,
    percentile,
    post_all,
    print_table,
    read_status,
    signed_requests,
    wait_until,
    write_results,
)
from bench.stack import Stack, executions_done, start_stack, succeeded

# More connections than this means the server is far behind: the run fails rather than melt.
MAX_CONNECTIONS = 512
KEEP_ALIVE_S = 2.0


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=30.0, help="seconds of steady load (default 30)")
    parser.add_argument("--rate", type=float, default=0.0, help="events/s (default: half the measured maximum)")
    parser.add_argument("--max-events", type=int, default=2000, help="events for the maximum (default 2000)")
    parser.add_argument("--workflows", type=int, default=10, help="endpoints, one workflow each (default 10)")
    parser.add_argument("--concurrency-limit", type=int, default=10, help="of each workflow (API default 10)")
    parser.add_argument("--worker-processes", type=int, default=1, help="hookyard worker --processes (default 1)")
    parser.add_argument(
        "--tree", default=None, help="run serve/dispatch/worker from this source tree (e.g. `git archive REV`)"
    )
    parser.add_argument("--timeout", type=float, default=600.0, help="give up waiting after this many s")
    parser.add_argument("--quick", action="store_true", help="smoke run: 10 s, 300 events for the maximum")
    args = parser.parse_args()
    if args.quick:
        args.duration, args.max_events = 10.0, 300
    return args


async def maximum(args: argparse.Namespace, stack: Stack) -> float:
    """End-to-end events/s with 32 requests in flight, until all are executed."""
    base, _ = await executions_done(stack.database_url)
    requests = signed_requests(stack.routes, [f"max-{n}" for n in range(args.max_events)])
    start = time.monotonic()
    await post_all(stack.port, requests, 32)
    done = await wait_until(lambda: succeeded(stack.database_url, base + args.max_events), args.timeout, 0.05)
    events: int = args.max_events
    return events / (done - start)


async def open_loop(args: argparse.Namespace, stack: Stack, rate: float) -> dict[str, Any]:
    """Send at `rate` on schedule; latencies from each scheduled time."""
    count = max(1, round(rate * args.duration))
    ids = [f"ol-{n:06d}" for n in range(count)]
    # Signed just before use would cost the sender time on schedule; signatures stay valid 5 min.
    requests = signed_requests(stack.routes, ids)
    base, _ = await executions_done(stack.database_url)
    idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter, float]] = []
    opened = 0
    scheduled: dict[str, float] = {}
    answered: dict[str, float] = {}
    lateness: list[float] = []
    statuses: dict[int, int] = {}

    async def connection() -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        nonlocal opened
        # uvicorn closes keep-alive connections idle for 5 s: reuse only recently used ones.
        while idle:
            reader, writer, used = idle.pop()
            if time.monotonic() - used < KEEP_ALIVE_S:
                return reader, writer
            writer.close()
        opened += 1
        if opened > MAX_CONNECTIONS:
            raise RuntimeError(f"over {MAX_CONNECTIONS} connections opened: the server stalled")
        return await asyncio.open_connection("127.0.0.1", stack.port)

    async def send(n: int, due_wall: float) -> None:
        reader, writer = await connection()
        lateness.append(time.time() - due_wall)
        writer.write(requests[n])
        status, _ = await read_status(reader, timeout=60)
        answered[ids[n]] = time.time()
        statuses[status] = statuses.get(status, 0) + 1
        idle.append((reader, writer, time.monotonic()))

    cpu_before = stack.procs.cpu_seconds()
    t0_mono, t0_wall = time.monotonic() + 0.2, time.time() + 0.2
    tasks = []
    for n in range(count):
        offset = n / rate
        delay = t0_mono + offset - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        scheduled[ids[n]] = t0_wall + offset
        tasks.append(asyncio.create_task(send(n, t0_wall + offset)))
    await asyncio.gather(*tasks)
    sent_s = time.monotonic() - t0_mono
    done = await wait_until(lambda: succeeded(stack.database_url, base + count), args.timeout, 0.05)
    cpu = cpu_share(cpu_before, stack.procs.cpu_seconds(), done - t0_mono)
    for _, writer, _ in idle:
        writer.close()
    async with httpx.AsyncClient(timeout=30) as http:
        arrivals: dict[str, float] = (await http.get(f"{stack.receiver}/arrivals", params={"prefix": "ol-"})).json()
    missing = [i for i in ids if i not in arrivals]
    if missing:
        raise RuntimeError(f"{len(missing)} events never reached the receiver, e.g. {missing[0]}")
    action_ms = [(arrivals[i] - scheduled[i]) * 1000 for i in ids]
    answer_ms = [(answered[i] - scheduled[i]) * 1000 for i in ids]
    late_ms = [v * 1000 for v in lateness]
    return {
        "rate": rate,
        "events": count,
        "send_s": sent_s,
        "achieved_rate": count / sent_s,
        "connections": opened,
        "http_statuses": statuses,
        "action_ms": _summary(action_ms),
        "answer_ms": _summary(answer_ms),
        "sender_late_ms": _summary(late_ms),
        "cpu_cores": cpu,
        "action_latencies_ms": [round(v, 1) for v in action_ms],
    }


def _summary(values: list[float]) -> dict[str, float]:
    return {
        "p50": percentile(values, 50),
        "p90": percentile(values, 90),
        "p99": percentile(values, 99),
        "max": max(values),
    }


def report(args: argparse.Namespace, max_rate: float, result: dict[str, Any]) -> None:
    print()
    print(
        f"maximum: {max_rate:.1f} events/s; steady load: {result['rate']:.1f} events/s for {args.duration:g} s "
        f"({result['events']} events, sent at {result['achieved_rate']:.1f}/s, {result['connections']} "
        f"connections opened); answers {result['http_statuses']}"
    )
    rows = [
        [label, s["p50"], s["p90"], s["p99"], s["max"]]
        for label, s in (
            ("webhook -> action (from scheduled send)", result["action_ms"]),
            ("webhook -> 2xx answer (from scheduled send)", result["answer_ms"]),
            ("sender lateness (actual - scheduled)", result["sender_late_ms"]),
        )
    ]
    print_table(["ms", "p50", "p90", "p99", "max"], rows)
    if result["sender_late_ms"]["p99"] > 10:
        print("note: the sender itself fell behind its schedule (busy machine); latencies still count from it")
    cores = result["cpu_cores"]
    print("CPU, cores: " + ", ".join(f"{k} {v:.2f}" for k, v in cores.items()))
    note = disturbance_note([cores])
    if note:
        print(note)
    path = write_results("latency", {"config": vars(args), "max_events_per_s": max_rate, "steady": result})
    print(f"results: {path}")


def main() -> int:
    args = parse_args()
    exit_on_sigterm()
    work = Path(tempfile.mkdtemp(prefix="hookyard-bench-latency-"))
    procs = Processes(work / "logs")
    stack = None
    try:
        print("starting PostgreSQL (fsync on), Redis, Temporal dev server (SQLite file) ...", flush=True)
        stack = start_stack(work, procs, args.workflows, args.concurrency_limit, count_round_trips=False)
        stack.tree = args.tree
        stack.start_app("serve")
        stack.start_app("dispatch")
        # `--processes 1` is left out so that trees from before the flag run too.
        stack.start_app("worker", *(["--processes", str(args.worker_processes)] if args.worker_processes != 1 else []))
        asyncio.run(stack.warm_up())  # caches filled, automations started: no cold start measured
        max_rate = 0.0
        rate = args.rate
        if not rate:
            print(f"maximum: {args.max_events} events, 32 in flight ...", flush=True)
            max_rate = asyncio.run(maximum(args, stack))
            rate = max_rate / 2
        print(f"steady load: {rate:.1f} events/s for {args.duration:g} s (open loop) ...", flush=True)
        result = asyncio.run(open_loop(args, stack, rate))
        report(args, max_rate, result)
        return 0
    finally:
        if stack is not None:
            stack.close()
        procs.close()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
