"""What one event costs end to end, and how `hookyard worker --processes N` scales it.

One stack (bench/stack.py): `hookyard serve` and `dispatch` run throughout; the worker is
started with `--processes P` for each run, interleaved (P = 1, 2, 1, 2, ... by default). Each
run: one warm-up event per workflow, then N signed webhooks (32 in flight) over K workflows,
timed from the first POST until all N executions succeeded. Per run it reports:
- events/s;
- CPU µs per event of each process (serve, dispatch, worker with all its copies, PostgreSQL,
  Temporal): CPU used during the run / N;
- PostgreSQL round trips per event of each app process, counted by a proxy that reads the
  message headers (bench/pgcount.py; `--no-count` goes direct, the proxy costs this process
  CPU and each round trip some latency);
- Temporal actions per event (starts, signals, activities, timers, markers in the histories
  during the run) and Temporal tasks per event (workflow + activity tasks: round trips).

Run: `python -m bench.cost [--events N] [--workflows K] [--processes 1,2] [--rounds R]`.
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

from bench.common import (
    Processes,
    cpu_share,
    disturbance_note,
    exit_on_sigterm,
    post_all,
    print_table,
    signed_requests,
    wait_until,
    write_results,
)
from bench.stack import Stack, executions_done, receiver_stats, start_stack, succeeded, temporal_counts, wall_clock

APPS = ("serve", "dispatch", "worker")
SERVERS = ("postgres", "temporal")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=2000, help="events per run (default 2000)")
    parser.add_argument("--workflows", type=int, default=10, help="endpoints, one workflow each (default 10)")
    parser.add_argument("--concurrency-limit", type=int, default=10, help="of each workflow (API default 10)")
    parser.add_argument("--concurrency", type=int, default=32, help="requests in flight (default 32)")
    parser.add_argument("--processes", default="1,2", help="worker processes per run, comma-separated (default 1,2)")
    parser.add_argument("--rounds", type=int, default=1, help="interleaved rounds over --processes (default 1)")
    parser.add_argument(
        "--tree", default=None, help="run serve/dispatch/worker from this source tree (e.g. `git archive REV`)"
    )
    parser.add_argument("--no-count", action="store_true", help="no round-trip counting proxy")
    parser.add_argument("--timeout", type=float, default=900.0, help="give up on a run after this many s")
    parser.add_argument("--quick", action="store_true", help="smoke run: 200 events")
    args = parser.parse_args()
    args.process_counts = [int(p) for p in args.processes.split(",")]
    if args.quick:
        args.events = min(args.events, 200)
    return args


async def one_run(args: argparse.Namespace, stack: Stack) -> dict[str, Any]:
    """N events through the running stack; throughput, CPU, round trips and Temporal counts."""
    await stack.warm_up()
    base, _ = await executions_done(stack.database_url)
    ids = [f"cost-{time.monotonic_ns()}-{n}" for n in range(args.events)]
    requests = signed_requests(stack.routes, ids)
    trips_before = stack.round_trips()
    cpu_before, since, start = stack.procs.cpu_seconds(), wall_clock(), time.monotonic()
    statuses = await post_all(stack.port, requests, args.concurrency)
    posted = time.monotonic()
    done = await wait_until(lambda: succeeded(stack.database_url, base + args.events), args.timeout, interval=0.05)
    cpu_after, until = stack.procs.cpu_seconds(), wall_clock()
    trips_after = stack.round_trips()
    seconds = done - start
    cores = cpu_share(cpu_before, cpu_after, seconds)
    temporal = await temporal_counts(stack.temporal_address, since, until)
    per_event = args.events
    return {
        "events": args.events,
        "http_statuses": statuses,
        "total_s": seconds,
        "ingest_s": posted - start,
        "events_per_s": args.events / seconds,
        "cpu_cores": cores,
        "cpu_us_per_event": {name: cores.get(name, 0.0) * seconds * 1e6 / per_event for name in (*APPS, *SERVERS)},
        "pg_round_trips_per_event": {
            name: (trips_after.get(name, 0) - trips_before.get(name, 0)) / per_event for name in trips_after
        },
        "temporal_actions_per_event": temporal["actions"] / per_event,
        "temporal_tasks_per_event": temporal["tasks"] / per_event,
        "temporal_history_events_per_event": temporal["events"] / per_event,
    }


def report(args: argparse.Namespace, runs: list[dict[str, Any]]) -> None:
    print()
    rows = []
    for r in runs:
        cpu, trips = r["cpu_us_per_event"], r["pg_round_trips_per_event"]
        rows.append(
            [
                r["label"],
                r["worker_processes"],
                r["events_per_s"],
                *(cpu[name] for name in (*APPS, *SERVERS)),
                *(trips.get(name, float("nan")) for name in APPS),
                r["temporal_actions_per_event"],
                r["temporal_tasks_per_event"],
                r["cpu_cores"]["worker"],
                r["cpu_cores"]["(other)"],
            ]
        )
    cpu_heads = [f"µs {n}" for n in (*APPS, *SERVERS)]
    trip_heads = [f"PG rt {n}" for n in APPS]
    heads = ["run", "worker procs", "events/s", *cpu_heads, *trip_heads, "T actions", "T tasks", "worker cores"]
    print_table([*heads, "other cores"], rows)
    for count in args.process_counts:
        mine = [r["events_per_s"] for r in runs if r["worker_processes"] == count]
        print(f"worker processes {count}: mean {sum(mine) / len(mine):.1f} events/s over {len(mine)} run(s)")
    note = disturbance_note(r["cpu_cores"] for r in runs)
    if note:
        print(note)
    path = write_results("cost", {"config": {k: v for k, v in vars(args).items()}, "runs": runs})
    print(f"results: {path}")


def main() -> int:
    args = parse_args()
    exit_on_sigterm()
    work = Path(tempfile.mkdtemp(prefix="hookyard-bench-cost-"))
    procs = Processes(work / "logs")
    stack = None
    try:
        print("starting PostgreSQL (fsync on), Redis, Temporal dev server (SQLite file) ...", flush=True)
        stack = start_stack(work, procs, args.workflows, args.concurrency_limit, count_round_trips=not args.no_count)
        stack.tree = args.tree
        stack.start_app("serve")
        stack.start_app("dispatch")
        runs = []
        for r in range(args.rounds):
            for count in args.process_counts:
                label = f"round {r + 1}"
                print(f"{label}: {args.events} events over {args.workflows} workflows, {count} worker process(es)")
                # `--processes 1` is left out so that trees from before the flag run too.
                stack.start_app("worker", *(["--processes", str(count)] if count != 1 else []))
                result = asyncio.run(one_run(args, stack))
                stack.stop_app("worker")
                runs.append({"label": label, "worker_processes": count, **result})
        received = asyncio.run(receiver_stats(stack.receiver))
        twice = received["count"] - received["distinct"]
        print(f"receiver: {received['count']} requests, {received['distinct']} distinct ids ({twice} repeated)")
        report(args, runs)
        return 0
    finally:
        if stack is not None:
            stack.close()
        procs.close()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
