"""Database outbox: rows of an owner's table to Novu and back, against the reference design.

The reference table `ent_notification` (DDL below, as in the README's "From a database outbox")
lives in an owner's own database: here two more databases on the bench's PostgreSQL, one per
side, so that neither side's poller sees the other's rows. N rows (default 10,000, all
`PUBLISH`, due now) are inserted in one statement; the clock runs from that INSERT until every
row is `SENT`. Both sides call the same local Novu stand-in (`POST /v1/events/trigger`, answers
like Novu at once) and run on the same PostgreSQL and Temporal dev server, in the same run:

  reference: the design the issue describes (an application using Temporal + Novu): a poller
      that every `--interval` s claims batches of 100 rows (`FOR UPDATE SKIP LOCKED`,
      PENDING -> PROCESSING) and starts one Temporal workflow per row; the workflow's one
      activity calls Novu and writes SENT (or FAILED) and Novu's answer back into the row. By
      default the poller claims batch after batch while batches come back full and sleeps only
      when one comes back short (the stronger baseline); `--reference-one-batch` claims one
      batch per interval, as a literal 10 s loop would.
  hookyard: `hookyard serve`, `dispatch` and `worker`; a `postgres` credential and a
      `postgres.outbox` workflow with `novu.trigger` created through the API, polling at the
      same interval with the same batch size.

Each side first gets `--warmup` rows (caches, Temporal task queues, pools) before the measured
rows. Reported for each: rows/s, seconds, when the last row left PENDING, INSERT -> SENT per
row (p50, p99), Novu requests and distinct transaction ids (one per row when nothing ran
twice), FAILED rows, CPU per process; and hookyard / reference.

Run: `python -m bench.outbox [--rows N] [--rounds R] [--quick] [--json]`; `--batch-size B
--no-reference` measures hookyard alone with another batch size. The child processes are this
module (`fake-novu`, `worker`) and bench/outbox_reference.py (`worker`, `poller`).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

if __package__ in (None, ""):  # run as a file: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import asyncpg
import httpx
import orjson

from bench import outbox_reference
from bench.common import (
    Processes,
    cpu_share,
    disturbance_note,
    exit_on_sigterm,
    print_table,
    python_module,
    tail,
    wait_http,
    wait_until,
    write_results,
)
from bench.newsletter import Api
from bench.stack import Stack, start_stack
from hookyard import services
from schemas import db
from schemas.store.owners import create_owner

REFERENCE = "bench.outbox_reference"
BATCH_SIZE = outbox_reference.BATCH_SIZE  # hookyard's outbox workflow gets the reference design's

# The reference table (the same DDL as the README's "From a database outbox").
TABLE_DDL = """
CREATE TABLE ent_notification (
    id                  bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    notification_status text        NOT NULL DEFAULT 'PENDING',  -- PENDING, PROCESSING, SENT, FAILED
    publish_status      text        NOT NULL DEFAULT 'DRAFT',    -- only PUBLISH rows are sent
    recipients          text[]      NOT NULL,                    -- Novu subscriber ids
    payload             jsonb       NOT NULL DEFAULT '{}',
    channels            text[]      NOT NULL DEFAULT '{}',
    scheduled_send_time timestamptz,                             -- NULL: send now
    error_details       jsonb,                                   -- the provider's answer or the error
    updated_at          timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX ent_notification_due ON ent_notification (notification_status, scheduled_send_time);
"""

# N published rows, due now, two recipients each.
INSERT_ROWS = """
INSERT INTO ent_notification (publish_status, recipients, payload, channels)
SELECT 'PUBLISH', ARRAY['user-' || n, 'user-' || (n + 1)],
       jsonb_build_object('name', 'Reader ' || n, 'order', n), ARRAY['email']
FROM generate_series(1, $1) AS n
"""

PROGRESS = """
SELECT count(*) FILTER (WHERE notification_status = 'SENT') AS sent,
       count(*) FILTER (WHERE notification_status = 'FAILED') AS failed,
       count(*) FILTER (WHERE notification_status = 'PENDING') AS pending
FROM ent_notification WHERE id > $1
"""

# Per row, from the INSERT to SENT (both sides set updated_at when they write SENT).
LATENCY = """
SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY s) AS p50,
       percentile_cont(0.99) WITHIN GROUP (ORDER BY s) AS p99, max(s) AS max
FROM (SELECT extract(epoch FROM updated_at - $2::timestamptz)::float8 AS s
      FROM ent_notification WHERE id > $1 AND notification_status = 'SENT') AS sent
"""


# --- child: the Novu stand-in ----------------------------------------------------------------

_novu: dict[str, Any] = {"count": 0, "transactions": set()}


def fake_novu(port: int) -> None:
    """Serve `POST /v1/events/trigger` as Novu answers it, and `GET /stats`, on 127.0.0.1:port."""
    import uvicorn
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse, Response
    from starlette.routing import Route

    async def trigger(request: Request) -> Response:
        body = orjson.loads(await request.body())
        transaction_id = str(body.get("transactionId") or f"novu-{_novu['count']}")
        _novu["count"] += 1
        _novu["transactions"].add(transaction_id)
        answer = {"acknowledged": True, "status": "processed", "transactionId": transaction_id}
        return Response(orjson.dumps({"data": answer}), status_code=201, media_type="application/json")

    async def stats(request: Request) -> Response:
        return JSONResponse({"count": _novu["count"], "distinct": len(_novu["transactions"])})

    app = Starlette(routes=[Route("/v1/events/trigger", trigger, methods=["POST"]), Route("/stats", stats)])
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False, backlog=2048)


async def novu_stats(novu_url: str) -> dict[str, int]:
    """Trigger requests the stand-in got, and distinct transaction ids."""
    async with httpx.AsyncClient(timeout=30) as http:
        data: dict[str, int] = (await http.get(f"{novu_url}/stats")).json()
    return data


# --- child: hookyard's worker, with Novu's address pointed at the stand-in -------------------


def bench_worker(novu_url: str) -> None:
    """`hookyard worker`; `novu.trigger` without a `base_url` goes to the stand-in (the only change:
    a configured base_url must be https, and the stand-in is plain HTTP)."""
    from actions import novu
    from hookyard.processes import worker
    from settings import load_settings

    novu.DEFAULT_BASE_URL = novu_url  # read at each request by actions.novu.run
    worker(load_settings())


# --- the benchmark ---------------------------------------------------------------------------


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command")
    fake = sub.add_parser("fake-novu", help="(child process) the Novu stand-in")
    fake.add_argument("--port", type=int, required=True)
    child = sub.add_parser("worker", help="(child process) hookyard's worker, Novu at the stand-in")
    child.add_argument("--novu-url", required=True)
    parser.add_argument("--rows", type=int, default=10_000, help="rows inserted at once (default 10000)")
    parser.add_argument("--warmup", type=int, default=50, help="rows sent first on each side (default 50)")
    parser.add_argument("--rounds", type=int, default=1, help="rounds of reference then hookyard (default 1)")
    parser.add_argument("--interval", type=float, default=1.0, help="poll interval of both sides, s (default 1)")
    parser.add_argument(
        "--reference-one-batch", action="store_true", help="reference: one batch per interval, not until drained"
    )
    parser.add_argument(
        "--concurrency-limit",
        type=int,
        default=100,
        help="of hookyard's outbox workflow (default 100: the reference worker's 100 concurrent activities)",
    )
    parser.add_argument(
        "--batch-size",
        type=int,
        default=BATCH_SIZE,
        help=f"hookyard's outbox batch_size (default {BATCH_SIZE}; the reference poller always claims {BATCH_SIZE})",
    )
    parser.add_argument("--no-hookyard", action="store_true", help="run the reference side only")
    parser.add_argument("--no-reference", action="store_true", help="run hookyard's side only")
    parser.add_argument(
        "--timeout", type=float, default=3600.0, help="stop waiting for a side's rows after this many s (default 3600)"
    )
    parser.add_argument("--quick", action="store_true", help="smoke run: 300 rows, 10 warm-up rows")
    parser.add_argument("--json", action="store_true", help="print the results as JSON on stdout (progress: stderr)")
    args = parser.parse_args()
    if args.quick:
        args.rows, args.warmup = min(args.rows, 300), min(args.warmup, 10)
    if args.command is None and args.rows < 1:
        parser.error("--rows must be at least 1")
    if args.command is None and args.no_hookyard and args.no_reference:
        parser.error("--no-hookyard and --no-reference leave nothing to run")
    return args


def database_url(server_url: str, name: str) -> str:
    """The URL of database `name` on the server of `server_url`."""
    return urlunsplit(urlsplit(server_url)._replace(path=f"/{name}"))


async def create_owner_database(server_url: str, name: str) -> str:
    """A fresh owner database with the reference table; returns its URL."""
    conn = await asyncpg.connect(server_url)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    url = database_url(server_url, name)
    conn = await asyncpg.connect(url)
    try:
        await conn.execute(TABLE_DDL)
    finally:
        await conn.close()
    return url


@dataclass
class Side:
    """One side of the comparison: its owner database and the processes that serve it."""

    name: str
    owner_url: str
    procs: list[services.ManagedProcess]

    def check(self) -> None:
        """Fail at once, with the log's tail, when one of the side's processes has died."""
        for proc in self.procs:
            if not proc.alive():
                raise RuntimeError(f"{proc.name} exited; see {proc.log_path}:\n{tail(proc.log_path)}")


@dataclass
class Sending:
    """One batch of rows, from the INSERT until every row ended (or the timeout)."""

    start: float  # monotonic clock at the INSERT
    done: float  # monotonic clock when every row was SENT or FAILED (or the timeout)
    sent: int
    failed: int
    complete: bool
    claimed_s: float | None  # seconds until no row was PENDING any more
    latency_s: tuple[float, float, float]  # INSERT -> SENT per row (updated_at): p50, p99, max


async def send_rows(side: Side, count: int, timeout: float) -> Sending:
    """Insert `count` rows at once and wait until all are SENT or FAILED, at most `timeout` s;
    progress is reported every 30 s."""
    conn = await asyncpg.connect(side.owner_url)
    try:
        last = await conn.fetchval("SELECT coalesce(max(id), 0) FROM ent_notification")
        inserted_at = await conn.fetchval("SELECT clock_timestamp()")
        start = time.monotonic()
        await conn.execute(INSERT_ROWS, count)
        seen = {"sent": 0, "failed": 0, "pending": count}
        claimed: list[float] = []
        said = [start]

        async def finished() -> bool:
            side.check()
            row = await conn.fetchrow(PROGRESS, last)
            seen.update(row)
            now = time.monotonic()
            if not claimed and row["pending"] == 0:
                claimed.append(now - start)
            if now - said[0] >= 30:
                said[0] = now
                say(f"  {side.name}: {row['sent']} SENT, {row['pending']} PENDING after {now - start:.0f} s")
            return bool(row["sent"] + row["failed"] >= count)

        complete = True
        try:
            done = await wait_until(finished, timeout, interval=0.1)
        except TimeoutError:
            complete, done = False, time.monotonic()
            say(f"{side.name}: timed out after {timeout:.0f} s; the figures are of the rows sent so far")
        latency = await conn.fetchrow(LATENCY, last, inserted_at)
    finally:
        await conn.close()
    return Sending(
        start,
        done,
        seen["sent"],
        seen["failed"],
        complete,
        claimed[0] if claimed else None,
        (latency["p50"] or 0.0, latency["p99"] or 0.0, latency["max"] or 0.0),
    )


async def one_run(args: argparse.Namespace, side: Side, procs: Processes, novu_url: str) -> dict[str, Any]:
    """Warm up, then `args.rows` rows, measured."""
    say(f"{side.name}: {args.warmup} warm-up rows ...")
    await send_rows(side, args.warmup, args.timeout)
    say(f"{side.name}: {args.rows} rows ...")
    novu_before, cpu_before = await novu_stats(novu_url), procs.cpu_seconds()
    run = await send_rows(side, args.rows, args.timeout)
    seconds = run.done - run.start
    cpu = cpu_share(cpu_before, procs.cpu_seconds(), seconds)
    novu_after = await novu_stats(novu_url)
    result = {
        "side": side.name,
        "rows": args.rows,
        "complete": run.complete,
        "seconds": seconds,
        "rows_per_s": run.sent / seconds,
        "sent": run.sent,
        "failed": run.failed,
        "claimed_s": run.claimed_s,
        "latency_s": dict(zip(("p50", "p99", "max"), run.latency_s, strict=True)),
        "novu_requests": novu_after["count"] - novu_before["count"],
        "novu_distinct_transactions": novu_after["distinct"] - novu_before["distinct"],
        "cpu_cores": cpu,
    }
    say(f"{side.name}: {result['rows_per_s']:.1f} rows/s ({seconds:.1f} s), {run.sent} SENT, {run.failed} FAILED")
    return result


def say(text: str) -> None:
    """Progress, on stderr when stdout carries the JSON."""
    print(text, file=sys.stderr if _json_output else sys.stdout, flush=True)


_json_output = False


def start_reference(args: argparse.Namespace, procs: Processes, temporal: str, novu_url: str, side: Side) -> None:
    """The reference design's worker and poller processes (bench/outbox_reference.py)."""
    common = ["--address", temporal, "--owner-url", side.owner_url]
    worker = procs.spawn("ref-worker", python_module(REFERENCE, "worker", *common, "--novu-url", novu_url))
    wait_log(worker, "reference worker polling")
    one = ["--one-batch"] if args.reference_one_batch else []
    poller = procs.spawn(
        "ref-poller", python_module(REFERENCE, "poller", *common, "--interval", str(args.interval), *one)
    )
    wait_log(poller, "reference poller running")
    side.procs += [worker, poller]


def wait_log(proc: services.ManagedProcess, text: str, timeout: float = 60.0) -> None:
    """Block until `text` appears in the process's log, or fail with its tail."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if text in proc.log_path.read_text(errors="replace"):
            return
        if not proc.alive():
            break
        time.sleep(0.1)
    raise RuntimeError(f"{proc.name} did not start; see {proc.log_path}:\n{tail(proc.log_path)}")


def report(args: argparse.Namespace, runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Print the runs side by side with the ratio; returns the summary."""
    by_side: dict[str, list[dict[str, Any]]] = {}
    for run in runs:
        by_side.setdefault(run["side"], []).append(run)
    mean = {side: sum(r["rows_per_s"] for r in rs) / len(rs) for side, rs in by_side.items()}
    ratio = mean["hookyard"] / mean["reference"] if "hookyard" in mean and mean.get("reference") else None
    summary = {"rows_per_s": mean, "ratio": ratio}
    if _json_output:
        return summary
    print()
    sides = list(by_side)
    rounds = max(len(rs) for rs in by_side.values())
    measures: list[tuple[str, Callable[[dict[str, Any]], object]]] = [
        ("rows/s", lambda r: r["rows_per_s"]),
        ("  seconds", lambda r: r["seconds"] if r["complete"] else f"{r['seconds']:.0f} (timed out)"),
        ("  SENT / FAILED", lambda r: f"{r['sent']} / {r['failed']}"),
        ("  no row PENDING after, s", lambda r: "" if r["claimed_s"] is None else r["claimed_s"]),
        ("  INSERT -> SENT p50, s", lambda r: r["latency_s"]["p50"]),
        ("  INSERT -> SENT p99, s", lambda r: r["latency_s"]["p99"]),
        ("  Novu requests", lambda r: r["novu_requests"]),
        ("  distinct transactions", lambda r: r["novu_distinct_transactions"]),
    ]
    rows: list[list[object]] = []
    for n in range(rounds):
        for label, value in measures:
            cells = [value(by_side[s][n]) if n < len(by_side[s]) else "" for s in sides]
            rows.append([f"round {n + 1}: {label.strip()}" if label == "rows/s" else label, *cells])
    rows.append(["mean rows/s", *(mean[s] for s in sides)])
    print_table([f"{args.rows} rows", *sides], rows)
    if ratio is not None:
        print(f"\nhookyard / reference: {ratio:.2f}x ({mean['hookyard']:.1f} vs {mean['reference']:.1f} rows/s)")
    print()
    last = ("(client)", "(other)", "(host busy)")
    names = [n for n in runs[0]["cpu_cores"] if n not in last] + list(last)
    labels = [f"{r['side']} {n // len(sides) + 1}" for n, r in enumerate(runs)]
    print_table(
        ["CPU, cores", *names],
        [[lb, *(r["cpu_cores"].get(n, 0.0) for n in names)] for lb, r in zip(labels, runs, strict=True)],
    )
    note = disturbance_note(r["cpu_cores"] for r in runs)
    if note:
        print(note)
    return summary


def main() -> int:
    global _json_output
    args = parse_args()
    if args.command == "fake-novu":
        fake_novu(args.port)
        return 0
    if args.command == "worker":
        bench_worker(args.novu_url)
        return 0
    _json_output = args.json
    return run_benchmark(args)


def run_benchmark(args: argparse.Namespace) -> int:
    """Start the stack, run the rounds, report."""
    exit_on_sigterm()
    work = Path(tempfile.mkdtemp(prefix="hookyard-bench-outbox-"))
    procs = Processes(work / "logs")
    stack = None
    try:
        say("starting PostgreSQL (fsync on), Redis, Temporal dev server (SQLite file) ...")
        stack = start_stack(work, procs, 0, 10, count_round_trips=False)
        novu_port = services.free_port()
        novu_url = f"http://127.0.0.1:{novu_port}"
        wait_http(
            f"{novu_url}/stats",
            procs.spawn("fake-novu", python_module("bench.outbox", "fake-novu", "--port", str(novu_port))),
        )
        sides = []
        if not args.no_reference:
            reference = Side("reference", asyncio.run(create_owner_database(stack.database_url, "owner_reference")), [])
            start_reference(args, procs, stack.temporal_address, novu_url, reference)
            sides.append(reference)
        if not args.no_hookyard:
            sides.append(start_hookyard(args, stack, novu_url))
        runs = []
        for _ in range(args.rounds):
            for side in sides:
                runs.append(asyncio.run(one_run(args, side, procs, novu_url)))
        summary = report(args, runs)
        path = write_results("outbox", {"config": vars(args), "summary": summary, "runs": runs})
        if _json_output:
            print(json.dumps({"summary": summary, "runs": runs}))
        else:
            print(f"results: {path}")
        return 0
    finally:
        if stack is not None:
            stack.close()
        procs.close()
        shutil.rmtree(work, ignore_errors=True)


def start_hookyard(args: argparse.Namespace, stack: Stack, novu_url: str) -> Side:
    """`hookyard serve`, `dispatch` and `worker`, then the owner's credentials and outbox workflow
    through the API, as an owner would create them (README, "From a database outbox")."""
    owner_url = asyncio.run(create_owner_database(stack.database_url, "owner_hookyard"))
    pg_port, novu_port = urlsplit(stack.database_url).port, urlsplit(novu_url).port
    extra = {
        # The owner's database (on the bench's PostgreSQL) and the Novu stand-in are on loopback.
        "HOOKYARD_EGRESS_ALLOW": f"127.0.0.1:{pg_port},127.0.0.1:{novu_port}",
        "HOOKYARD_RATE_LIMITS": "novu=0/s",  # unlimited: the stand-in is not Novu's Free tier
    }
    stack.start_app("serve", **extra)
    stack.start_app("dispatch", **extra)
    worker = stack.procs.spawn(
        "worker", python_module("bench.outbox", "worker", "--novu-url", novu_url), stack.app_env("worker", **extra)
    )
    stack.apps["worker"] = worker
    asyncio.run(create_outbox_workflow(args, stack, owner_url))
    return Side("hookyard", owner_url, [stack.apps["serve"], stack.apps["dispatch"], worker])


async def create_outbox_workflow(args: argparse.Namespace, stack: Stack, owner_url: str) -> str:
    """A `postgres` credential, a Novu credential and the `postgres.outbox` workflow; its id."""
    conn = await db.connect(stack.database_url)
    try:
        _, key = await create_owner(conn, "outbox")
    finally:
        await conn.close()
    api = Api(f"http://127.0.0.1:{stack.port}", key)
    try:
        database = await api.post(
            "/api/credentials", {"provider": "postgres", "name": "app db", "secret": {"url": owner_url}}
        )
        novu = await api.post("/api/credentials", {"provider": "novu", "name": "novu", "secret": {"api_key": "bench"}})
        workflow = await api.post("/api/workflows", outbox_workflow(args, database["id"], novu["id"]))
        return str(workflow["id"])
    finally:
        await api.client.aclose()


def outbox_workflow(args: argparse.Namespace, database_credential: str, novu_credential: str) -> dict[str, Any]:
    """The reference design as a hookyard workflow (the README's example, at the bench's interval)."""
    return {
        "name": "notifications",
        "trigger": {
            "type": "postgres.outbox",
            "config": {
                "credential_id": database_credential,
                "table": "public.ent_notification",
                "status_column": "notification_status",
                "conditions": [{"column": "publish_status", "op": "equals", "value": "PUBLISH"}],
                "due_column": "scheduled_send_time",
                "updated_column": "updated_at",
                "result_column": "error_details",
                "batch_size": args.batch_size,
                "poll_interval_s": args.interval,
            },
        },
        "action": {
            "type": "novu.trigger",
            "credential_id": novu_credential,
            "config": {
                "workflow_id": outbox_reference.NOVU_WORKFLOW,
                "to": "{{ trigger.row.recipients }}",
                "payload": {"name": "{{ trigger.row.payload.name }}", "order": "{{ trigger.row.payload.order }}"},
            },
        },
        "concurrency_limit": args.concurrency_limit,
    }


if __name__ == "__main__":
    sys.exit(main())
