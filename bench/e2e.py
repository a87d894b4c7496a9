"""End to end: signed webhook in, action request out, with real PostgreSQL, Redis and Temporal.

One run, one Temporal dev server (SQLite file), one receiver process:
  (a) hookyard throughput: `hookyard serve`, `dispatch` and `worker`; N signed webhooks spread
      over K endpoints with one http.request workflow each; events/s from the first POST until
      all N executions are `succeeded` in PostgreSQL;
  (c) hookyard idle latency: webhooks one at a time; POST written -> action request received;
  (d) spread: the same N events over 10, 200 and 1,000 workflows (`--spread`), interleaved
      (`--rounds` rounds of each count, in turn) so the machine's noise hits every count alike;
      events/s for each, its ratio to the first count, and Temporal round trips per event
      (signals, workflow starts, workflow tasks and activities in the histories of the lanes
      and automations); with `--lanes 0,16` each count also runs with lanes off (one automation
      per workflow), dispatch and worker restarted between the settings;
  (b) the seed design: one Temporal workflow per event running one activity that POSTs to the
      receiver (bench/baseline.py); completed workflows/s for the same N.
CPU used by each process during (a), (d) and (b) is reported too (in cores; 2.0 = both busy).

Run: `python -m bench.e2e [--events N] [--quick] [--spread 10,200,1000] [--rounds 2] [--lanes 16]`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a file: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx
from temporalio.client import Client

from bench import baseline
from bench.common import (
    Processes,
    Route,
    cpu_share,
    create_routes,
    disturbance_note,
    event_body,
    exit_on_sigterm,
    hookyard_argv,
    master_key,
    percentile,
    post_all,
    print_table,
    python_module,
    read_status,
    signed_requests,
    wait_http,
    wait_until,
    write_results,
)
from bench.stack import executions_done
from hookyard import services
from oauth.crypto import Keyring
from schemas.migrate import migrate

TARGET_RATIO = 25.0  # issue 13: end to end against one workflow per event
TARGET_P50_MS = 150.0
TARGET_SPREAD = 0.7  # the most spread count's events/s over the least spread one's
SEED_QUEUE = "bench-seed"


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=2000, help="events per throughput run (default 2000)")
    parser.add_argument("--workflows", type=int, default=10, help="endpoints, one workflow each (default 10)")
    parser.add_argument("--concurrency-limit", type=int, default=10, help="of each workflow (API default 10)")
    parser.add_argument("--concurrency", type=int, default=32, help="requests or starts in flight (default 32)")
    parser.add_argument("--samples", type=int, default=30, help="idle latency samples (default 30)")
    parser.add_argument("--gap", type=float, default=0.3, help="pause between latency samples, s")
    parser.add_argument("--timeout", type=float, default=900.0, help="give up on a phase after this many s")
    parser.add_argument("--quick", action="store_true", help="smoke run: 200 events, 10 latency samples")
    parser.add_argument("--spread", default="10,200,1000", help="(d) workflow counts, comma-separated; '' skips (d)")
    parser.add_argument("--rounds", type=int, default=2, help="(d) rounds of each workflow count (default 2)")
    parser.add_argument("--lanes", default="16", help="(d) HOOKYARD_LANES settings to compare, e.g. 0,16")
    parser.add_argument("--spread-only", action="store_true", help="run (d) alone")
    args = parser.parse_args()
    if args.quick:
        args.events, args.samples, args.rounds = min(args.events, 200), 10, 1
    args.spread_counts = [int(n) for n in args.spread.split(",") if n.strip()]
    args.lane_settings = [int(n) for n in args.lanes.split(",") if n.strip()]
    return args


async def hookyard_throughput(
    args: argparse.Namespace, procs: Processes, port: int, database_url: str, routes: list[Route], receiver: str
) -> dict[str, Any]:
    async def all_succeeded(expected: int) -> bool:
        ok, bad = await executions_done(database_url)
        if bad:
            raise RuntimeError(f"{bad} executions failed; see the worker log")
        return bool(ok >= expected)

    warm = len(routes)  # one event per workflow: endpoint caches filled, automations started
    await post_all(port, signed_requests(routes, [f"warm-{n}" for n in range(warm)]), args.concurrency)
    await wait_until(lambda: all_succeeded(warm), 120)
    requests = signed_requests(routes, [f"tp-{n}" for n in range(args.events)])
    cpu_before, start = procs.cpu_seconds(), time.monotonic()
    statuses = await post_all(port, requests, args.concurrency)
    posted = time.monotonic()
    done = await wait_until(lambda: all_succeeded(warm + args.events), args.timeout, interval=0.05)
    cpu = cpu_share(cpu_before, procs.cpu_seconds(), done - start)
    async with httpx.AsyncClient(timeout=30) as http:
        received = (await http.get(f"{receiver}/stats")).json()
    return {
        "events": args.events,
        "http_statuses": statuses,
        "ingest_s": posted - start,
        "total_s": done - start,
        "events_per_s": args.events / (done - start),
        "ingest_events_per_s": args.events / (posted - start),
        "receiver_requests": received["count"],
        "receiver_distinct_ids": received["distinct"],
        "cpu_cores": cpu,
    }


async def idle_latency(args: argparse.Namespace, port: int, route: Route, receiver: str) -> dict[str, Any]:
    """Webhooks one at a time on one keep-alive connection; POST written -> receiver arrival."""
    latencies: list[float] = []
    await asyncio.sleep(2.0)  # let the throughput run's tail settle: the stack is idle
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        async with httpx.AsyncClient(timeout=30) as http:
            for n in range(args.samples):
                event_id = f"lat-{n:04d}"
                request = signed_requests([route], [event_id])[0]
                sent = time.time()
                writer.write(request)
                status, answer = await read_status(reader)
                if status != 202:
                    raise RuntimeError(f"latency sample {n}: HTTP {status} {answer!r}")
                arrived_at = None
                deadline = time.monotonic() + 30
                while arrived_at is None and time.monotonic() < deadline:
                    found = (await http.get(f"{receiver}/arrivals", params={"prefix": event_id})).json()
                    arrived_at = found.get(event_id)
                    if arrived_at is None:
                        await asyncio.sleep(0.01)
                if arrived_at is None:
                    raise TimeoutError(f"latency sample {n} never reached the receiver")
                latencies.append((arrived_at - sent) * 1000)
                await asyncio.sleep(args.gap)
    finally:
        writer.close()
    return {
        "samples": len(latencies),
        "p50_ms": percentile(latencies, 50),
        "p95_ms": percentile(latencies, 95),
        "max_ms": max(latencies),
        "latencies_ms": [round(v, 1) for v in latencies],
    }


async def seed_throughput(
    args: argparse.Namespace, procs: Processes, temporal_address: str, receiver: str
) -> dict[str, Any]:
    client = await Client.connect(temporal_address)

    async def start(event_id: str, n: int) -> None:
        event = baseline.SeedEvent(f"{receiver}/r", event_id, json.loads(event_body(event_id, n)))
        await client.start_workflow(baseline.WORKFLOW_NAME, event, id=f"seed-{event_id}", task_queue=SEED_QUEUE)

    async def completed(expected: int) -> bool:
        query = f"WorkflowType = '{baseline.WORKFLOW_NAME}' AND ExecutionStatus = 'Completed'"
        return (await client.count_workflows(query)).count >= expected

    warm = 5
    await asyncio.gather(*(start(f"warm-{n}", n) for n in range(warm)))
    await wait_until(lambda: completed(warm), 120, interval=0.2)
    pending = iter(range(args.events))

    async def starter() -> None:
        for n in pending:
            await start(f"tp-{n}", n)

    cpu_before, begin = procs.cpu_seconds(), time.monotonic()
    await asyncio.gather(*(starter() for _ in range(args.concurrency)))
    started = time.monotonic()
    done = await wait_until(lambda: completed(warm + args.events), args.timeout, interval=0.25)
    return {
        "events": args.events,
        "start_s": started - begin,
        "total_s": done - begin,
        "events_per_s": args.events / (done - begin),
        "starts_per_s": args.events / (started - begin),
        "cpu_cores": cpu_share(cpu_before, procs.cpu_seconds(), done - begin),
    }


_ROUND_TRIPS = {
    "EVENT_TYPE_WORKFLOW_EXECUTION_SIGNALED": "signals",
    "EVENT_TYPE_WORKFLOW_EXECUTION_STARTED": "runs",
    "EVENT_TYPE_WORKFLOW_TASK_SCHEDULED": "workflow_tasks",
    "EVENT_TYPE_ACTIVITY_TASK_SCHEDULED": "activities",
}


async def round_trips(client: Client) -> dict[str, int]:
    """Temporal round trips so far, over every run of every lane and automation workflow."""
    from temporalio.api.enums.v1 import EventType

    counts = dict.fromkeys(_ROUND_TRIPS.values(), 0)
    query = "WorkflowType = 'hookyard.lane' OR WorkflowType = 'hookyard.automation'"
    async for run in client.list_workflows(query):
        history = await client.get_workflow_handle(run.id, run_id=run.run_id).fetch_history()
        for event in history.events:
            name = _ROUND_TRIPS.get(EventType.Name(event.event_type))
            if name:
                counts[name] += 1
    return counts


async def spread_run(
    args: argparse.Namespace,
    procs: Processes,
    port: int,
    database_url: str,
    routes: list[Route],
    tag: str,
    client: Client,
) -> dict[str, Any]:
    """N events over these routes' workflows: events/s, CPU, and Temporal round trips per event."""
    before_ok, _ = await executions_done(database_url)

    async def all_succeeded() -> bool:
        ok, bad = await executions_done(database_url)
        if bad:
            raise RuntimeError(f"{bad} executions failed; see the worker log")
        return bool(ok >= before_ok + args.events)

    trips_before = await round_trips(client)
    requests = signed_requests(routes, [f"{tag}-{n}" for n in range(args.events)])
    cpu_before, start = procs.cpu_seconds(), time.monotonic()
    await post_all(port, requests, args.concurrency)
    done = await wait_until(all_succeeded, args.timeout, interval=0.05)
    cpu = cpu_share(cpu_before, procs.cpu_seconds(), done - start)
    await asyncio.sleep(1.0)  # the last batches' completions reach the histories
    trips_after = await round_trips(client)
    return {
        "events_per_s": args.events / (done - start),
        "cpu_cores": cpu,
        "round_trips_per_event": {k: (trips_after[k] - trips_before[k]) / args.events for k in trips_after},
    }


def spread(
    args: argparse.Namespace,
    procs: Processes,
    apps: list[Any],
    start_app: Any,
    port: int,
    database_url: str,
    temporal_address: str,
    keyring: Keyring,
    receiver: str,
) -> dict[str, Any]:
    """(d): every (lanes setting, workflow count) pair, `--rounds` times, interleaved."""
    routes = {
        k: asyncio.run(create_routes(database_url, keyring, k, f"{receiver}/r", args.concurrency_limit))[1]
        for k in args.spread_counts
    }
    runs: dict[str, list[dict[str, Any]]] = {}
    for lanes in args.lane_settings:
        for name in ("dispatch", "worker"):  # restarted with this lanes setting
            old = next(p for p in apps if p.name == name)
            procs.stop(old)
            apps[apps.index(old)] = start_app(name, {"HOOKYARD_LANES": str(lanes)})
        time.sleep(2.0)

        async def warm(k: int, lanes: int = lanes) -> None:
            # One event per workflow: endpoint caches filled (and, lanes off, automations started).
            ok_before = (await executions_done(database_url))[0]
            await post_all(port, signed_requests(routes[k], [f"warm{lanes}-{k}-{n}" for n in range(k)]), 32)
            await wait_until(lambda: _succeeded_since(database_url, ok_before + k), args.timeout)

        for k in args.spread_counts:
            asyncio.run(warm(k))
        for r in range(args.rounds):
            # Odd rounds run the counts in reverse, so a drift in the host's load (or the table's
            # growth) does not always favour the same count.
            for k in args.spread_counts if r % 2 == 0 else args.spread_counts[::-1]:
                key = f"lanes={lanes} workflows={k}"
                print(f"(d) {key}, round {r + 1}/{args.rounds} ...", flush=True)

                async def one(k: int = k, r: int = r, lanes: int = lanes) -> dict[str, Any]:
                    client = await Client.connect(temporal_address)
                    return await spread_run(args, procs, port, database_url, routes[k], f"s{lanes}-{k}-{r}", client)

                result = asyncio.run(one())
                trips = result["round_trips_per_event"]
                print(
                    f"    {result['events_per_s']:.1f} events/s; per event: {trips['signals']:.3f} signals, "
                    f"{trips['workflow_tasks']:.3f} workflow tasks, {trips['activities']:.3f} activities",
                    flush=True,
                )
                runs.setdefault(key, []).append(result)
    return runs


async def _succeeded_since(database_url: str, expected: int) -> bool:
    return (await executions_done(database_url))[0] >= expected


def spread_report(args: argparse.Namespace, runs: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    """Median events/s per (lanes, count), the ratio to the first count, and round trips per event."""
    rows = []
    summary: dict[str, Any] = {}
    for lanes in args.lane_settings:
        base = None
        for k in args.spread_counts:
            key = f"lanes={lanes} workflows={k}"
            rates = sorted(r["events_per_s"] for r in runs[key])
            median = statistics.median(rates)
            base = median if base is None else base
            trips = {
                n: sum(r["round_trips_per_event"][n] for r in runs[key]) / len(runs[key]) for n in _ROUND_TRIPS.values()
            }
            cpu = {
                n: sum(r["cpu_cores"].get(n, 0.0) for r in runs[key]) / len(runs[key])
                for n in ("worker", "temporal", "dispatch")
            }
            ratio = median / base
            last = k == args.spread_counts[-1]
            verdict = ("meets" if ratio >= TARGET_SPREAD else "misses") if last and len(args.spread_counts) > 1 else ""
            rows.append(
                [
                    lanes,
                    k,
                    median,
                    ", ".join(f"{v:.0f}" for v in rates),
                    ratio,
                    verdict,
                    trips["signals"],
                    trips["runs"],
                    trips["workflow_tasks"],
                    trips["activities"],
                    cpu["worker"],
                    cpu["temporal"],
                    cpu["dispatch"],
                ]
            )
            summary[key] = {
                "median_events_per_s": median,
                "ratio": ratio,
                "round_trips_per_event": trips,
                "cpu_cores": cpu,
                "runs": runs[key],
            }
    print()
    print_table(
        [
            "lanes",
            "workflows",
            "events/s",
            "runs",
            f"vs first (>= {TARGET_SPREAD:g})",
            "verdict",
            "signals/ev",
            "starts/ev",
            "wf tasks/ev",
            "activities/ev",
            "worker",
            "temporal",
            "dispatch",
        ],
        rows,
    )
    print(
        "(d) medians of interleaved rounds; CPU in cores, mean over rounds. Absolute figures vary with the"
        " machine's load; compare the ratios, measured side by side."
    )
    return summary


def report(
    args: argparse.Namespace,
    hy: dict[str, Any],
    seed: dict[str, Any],
    lat: dict[str, Any],
    spread_summary: dict[str, Any] | None = None,
) -> None:
    ratio = hy["events_per_s"] / seed["events_per_s"]
    p50 = lat["p50_ms"]
    print()
    print_table(
        ["measure", "value", "target", "verdict"],
        [
            ["(a) hookyard end-to-end events/s", hy["events_per_s"], "", ""],
            ["    hookyard ingest events/s (client)", hy["ingest_events_per_s"], "", ""],
            ["(b) seed design completed workflows/s", seed["events_per_s"], "", ""],
            ["    seed design starts/s", seed["starts_per_s"], "", ""],
            ["    ratio (a) / (b)", ratio, f">= {TARGET_RATIO:g}x", "meets" if ratio >= TARGET_RATIO else "misses"],
            ["(c) idle latency p50 ms", p50, f"< {TARGET_P50_MS:g}", "meets" if p50 < TARGET_P50_MS else "misses"],
            ["    idle latency p95 ms", lat["p95_ms"], "", ""],
        ],
    )
    print()
    last = ("(client)", "(other)", "(host busy)")
    names = [n for n in {**hy["cpu_cores"], **seed["cpu_cores"]} if n not in last] + list(last)
    phases = (("(a) hookyard", hy), ("(b) seed design", seed))
    print_table(["CPU, cores", *names], [[label, *(r["cpu_cores"].get(n, 0.0) for n in names)] for label, r in phases])
    note = disturbance_note([hy["cpu_cores"], seed["cpu_cores"]])
    if note:
        print(note)
    print(f"\nhookyard HTTP answers: {hy['http_statuses']}; receiver got {hy['receiver_requests']} requests")
    path = write_results(
        "e2e",
        {
            "config": vars(args),
            "hookyard": hy,
            "seed_design": seed,
            "ratio": ratio,
            "idle_latency": lat,
            "spread": spread_summary or {},
            "targets": {"ratio": TARGET_RATIO, "idle_p50_ms": TARGET_P50_MS, "spread": TARGET_SPREAD},
        },
    )
    print(f"results: {path}")


def main() -> int:
    args = parse_args()
    exit_on_sigterm()
    work = Path(tempfile.mkdtemp(prefix="hookyard-bench-e2e-"))
    procs = Processes(work / "logs")
    try:
        print("starting PostgreSQL (fsync on), Redis, Temporal dev server (SQLite file) ...", flush=True)
        database_url = procs.add_service(*services.start_postgres(work, services.free_port(), durable=True))
        redis_url = procs.add_service(*services.start_redis(work, services.free_port()))
        temporal_address = procs.add_service(*services.start_temporal(work, services.free_port()))
        asyncio.run(migrate(database_url))
        receiver_port = services.free_port()
        receiver = f"http://127.0.0.1:{receiver_port}"
        argv = python_module("bench.receiver", "--port", str(receiver_port))
        wait_http(f"{receiver}/stats", procs.spawn("receiver", argv))
        kid, key, keys_env = master_key()
        keyring = Keyring([(kid, key)])
        fixture = create_routes(database_url, keyring, args.workflows, f"{receiver}/r", args.concurrency_limit)
        _, routes = asyncio.run(fixture)

        port = services.free_port()
        env = {
            "DATABASE_URL": database_url,
            "REDIS_URL": redis_url,
            "TEMPORAL_ADDRESS": temporal_address,
            "HOOKYARD_PORT": str(port),
            "HOOKYARD_MASTER_KEYS": keys_env,
            "HOOKYARD_TASK_QUEUE": "hookyard-bench",
            "HOOKYARD_LOG_LEVEL": "WARNING",
            "HOOKYARD_WORKER_GRACEFUL_SHUTDOWN_S": "5",
            "HOOKYARD_EGRESS_ALLOW": f"127.0.0.1:{receiver_port}",  # the local receiver only
        }

        def start_app(name: str, extra: dict[str, str] | None = None) -> Any:
            return procs.spawn(name, hookyard_argv(name), {**env, **(extra or {})})

        apps = [start_app(name) for name in ("serve", "dispatch", "worker")]
        wait_http(f"http://127.0.0.1:{port}/readyz", apps[0])
        if args.spread_only:
            spread_report(
                args, spread(args, procs, apps, start_app, port, database_url, temporal_address, keyring, receiver)
            )
            return 0

        print(f"(a) hookyard: {args.events} events over {args.workflows} workflows ...", flush=True)
        hy = asyncio.run(hookyard_throughput(args, procs, port, database_url, routes, receiver))
        print(f"(c) hookyard idle latency: {args.samples} webhooks one at a time ...", flush=True)
        lat = asyncio.run(idle_latency(args, port, routes[0], receiver))
        spread_summary = None
        if args.spread_counts:
            runs = spread(args, procs, apps, start_app, port, database_url, temporal_address, keyring, receiver)
            spread_summary = spread_report(args, runs)
        for proc in apps:  # the seed design gets the machine to itself
            procs.stop(proc)

        print(f"(b) seed design: {args.events} workflows, one activity each ...", flush=True)
        argv = python_module("bench.baseline", "--address", temporal_address, "--task-queue", SEED_QUEUE)
        seed_worker = procs.spawn("seed-worker", argv)
        seed = asyncio.run(seed_throughput(args, procs, temporal_address, receiver))
        procs.stop(seed_worker)
        report(args, hy, seed, lat, spread_summary)
        return 0
    finally:
        procs.close()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
