"""Newsletter throughput: recipients/s through a local fake Resend, and Temporal round trips.

One run, one Temporal dev server (SQLite file), PostgreSQL (fsync on), Redis, `hookyard serve`
and `dispatch`, a worker whose Resend calls go to a local fake Resend (a small Starlette server
answering `POST /emails` like Resend does), with provider rate limits off:
  (a) one `email.send-newsletter` execution to N recipients (default 5,000), batches of 50 with
      10 requests in flight and no pause; recipients/s from the manual-run POST until the
      execution is finished, and over the sending itself (first to last request at the fake);
  (b) the baseline: the same N e-mails as N `email.send` executions of one workflow (one manual
      run each, concurrency limit 10): the automation pipeline as it is without newsletters.
For each, Temporal round trips are counted from the workflow histories: workflow tasks and
activity tasks scheduled (each is one dispatch to a worker and one completion back), over
every run of the Temporal workflows involved (the automation, and the newsletter's own).

Run: `python -m bench.newsletter [--recipients N] [--quick]`. The child processes are this
module too: `python -m bench.newsletter fake-resend --port P` and `... worker --resend-url U`.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a file: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx
import orjson
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client

from bench.common import (
    Processes,
    cpu_share,
    disturbance_note,
    exit_on_sigterm,
    hookyard_argv,
    http_post,
    master_key,
    post_all,
    print_table,
    python_module,
    wait_http,
    wait_until,
    write_results,
)
from hookyard import services
from schemas import db
from schemas.migrate import migrate
from schemas.store.owners import create_owner
from schemas.store.workflows import DEFAULT_LANES
from worker.automation.contract import lane_id

TASK_QUEUE = "hookyard-bench-newsletter"
MAX_RECIPIENTS = 20_000  # the trigger data is one request body, at most 1 MiB
_ROUND_TRIP_EVENTS = {
    EventType.EVENT_TYPE_WORKFLOW_TASK_SCHEDULED: "workflow_tasks",
    EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED: "activity_tasks",
}


# --- child: the fake Resend ------------------------------------------------------------------

_stats: dict[str, Any] = {"count": 0, "keys": set(), "first": None, "last": None}


async def _fake_send(request: Request) -> Response:
    """Accept the e-mail as Resend would, noting its idempotency key and arrival."""
    now = time.time()
    body = await request.body()
    _stats["count"] += 1
    _stats["keys"].add(request.headers.get("idempotency-key", ""))
    _stats["first"] = _stats["first"] or now
    _stats["last"] = now
    message_id = f"fake-{_stats['count']}-{len(body)}"
    return Response(orjson.dumps({"id": message_id}), media_type="application/json")


async def _fake_stats(request: Request) -> Response:
    """Requests so far, distinct idempotency keys, first and last arrival (wall clock)."""
    return JSONResponse(
        {
            "count": _stats["count"],
            "distinct_keys": len(_stats["keys"]),
            "first": _stats["first"],
            "last": _stats["last"],
        }
    )


def fake_resend(port: int) -> None:
    """Serve the fake Resend on 127.0.0.1:port."""
    app = Starlette(routes=[Route("/emails", _fake_send, methods=["POST"]), Route("/stats", _fake_stats)])
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False, backlog=2048)


# --- child: the worker -----------------------------------------------------------------------


def bench_worker(resend_url: str) -> None:
    """`hookyard worker`, with Resend's API address pointed at the fake (the only change)."""
    from actions import email
    from hookyard.processes import worker
    from settings import load_settings

    email.RESEND_URL = resend_url  # read at each request by actions.email.send_resend
    worker(load_settings())


# --- the benchmark ---------------------------------------------------------------------------


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command")
    fake = sub.add_parser("fake-resend", help="(child process) the fake Resend")
    fake.add_argument("--port", type=int, required=True)
    child = sub.add_parser("worker", help="(child process) the worker, sending to the fake Resend")
    child.add_argument("--resend-url", required=True)
    parser.add_argument("--recipients", type=int, default=5000, help="recipients (default 5000)")
    parser.add_argument("--batch-size", type=int, default=50, help="newsletter batch size (default 50)")
    parser.add_argument("--concurrency", type=int, default=10, help="requests in flight, both runs (default 10)")
    parser.add_argument("--pause", type=float, default=0.0, help="newsletter pause between batches, s (default 0)")
    parser.add_argument("--no-baseline", action="store_true", help="skip (b), the N email.send executions")
    parser.add_argument("--timeout", type=float, default=900.0, help="give up on a phase after this many s")
    parser.add_argument("--quick", action="store_true", help="smoke run: 500 recipients")
    args = parser.parse_args()
    if args.quick:
        args.recipients = min(args.recipients, 500)
    if args.command is None and not 1 <= args.recipients <= MAX_RECIPIENTS:
        parser.error(f"--recipients must be 1..{MAX_RECIPIENTS}")
    return args


class Api:
    """The owner's API, as a user would call it."""

    def __init__(self, base_url: str, key: str) -> None:
        self.base_url = base_url
        self.key = key
        self.client = httpx.AsyncClient(base_url=base_url, headers={"authorization": f"Bearer {key}"}, timeout=60)

    async def post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        response = await self.client.post(path, json=body)
        if response.status_code >= 300:
            raise RuntimeError(f"POST {path}: {response.status_code} {response.text}")
        data: dict[str, Any] = response.json()
        return data

    async def workflow(self, endpoint_id: str, action: dict[str, Any], concurrency_limit: int) -> str:
        body = {
            "name": f"bench {action['type']}",
            "trigger": {"type": "webhook.received", "config": {"endpoint_id": endpoint_id}},
            "action": action,
            "concurrency_limit": concurrency_limit,
        }
        return str((await self.post("/api/workflows", body))["id"])

    async def execution(self, execution_id: str) -> dict[str, Any]:
        response = await self.client.get(f"/api/executions/{execution_id}")
        response.raise_for_status()
        data: dict[str, Any] = response.json()
        return data


def subscribers(prefix: str, n: int) -> list[dict[str, str]]:
    return [{"email": f"{prefix}{i}@bench.test", "name": f"Reader {i}"} for i in range(n)]


def newsletter_action(args: argparse.Namespace, credential_id: str) -> dict[str, Any]:
    return {
        "type": "email.send-newsletter",
        "config": {
            "providers": [{"provider": "resend", "credential_id": credential_id}],
            "from": "News <news@bench.test>",
            "subject": "Issue {{ trigger.issue }} for {{ recipient.name }}",
            "text": "Hello {{ recipient.name }}, here is issue {{ trigger.issue }}.",
            "recipients_path": "subscribers",
            "batch_size": args.batch_size,
            "concurrency": args.concurrency,
            "pause_s": args.pause,
        },
    }


def email_action(credential_id: str) -> dict[str, Any]:
    return {
        "type": "email.send",
        "config": {
            "providers": [{"provider": "resend", "credential_id": credential_id}],
            "from": "News <news@bench.test>",
            "to": "{{ trigger.email }}",
            "subject": "Issue {{ trigger.issue }} for {{ trigger.name }}",
            "text": "Hello {{ trigger.name }}, here is issue {{ trigger.issue }}.",
        },
    }


async def fake_stats(fake_url: str) -> dict[str, Any]:
    async with httpx.AsyncClient(timeout=30) as http:
        data: dict[str, Any] = (await http.get(f"{fake_url}/stats")).json()
    return data


async def round_trips(client: Client, workflow_ids: list[str]) -> dict[str, int]:
    """Workflow and activity tasks scheduled over every run of these Temporal workflows."""
    counts = {"workflow_tasks": 0, "activity_tasks": 0, "runs": 0}
    for workflow_id in workflow_ids:
        async for run in client.list_workflows(f"WorkflowId = '{workflow_id}'"):
            counts["runs"] += 1
            history = await client.get_workflow_handle(workflow_id, run_id=run.run_id).fetch_history()
            for event in history.events:
                name = _ROUND_TRIP_EVENTS.get(event.event_type)
                if name:
                    counts[name] += 1
    return counts


def holders(workflow_id: str) -> list[str]:
    """Where the workflow's executions run: its lane (one of the task queue's default lanes) or,
    with lanes off, its automation. Lanes are shared, so callers count the difference a run makes."""
    return [f"automation-{workflow_id}", *(lane_id(TASK_QUEUE, n) for n in range(DEFAULT_LANES))]


def _minus(after: dict[str, int], before: dict[str, int]) -> dict[str, int]:
    return {k: after[k] - before[k] for k in after}


async def newsletter_run(
    args: argparse.Namespace, api: Api, procs: Processes, client: Client, workflow_id: str, fake_url: str
) -> dict[str, Any]:
    before = await fake_stats(fake_url)
    trips_before = await round_trips(client, holders(workflow_id))
    trigger = {"issue": 1, "subscribers": subscribers("reader", args.recipients)}
    cpu_before, start = procs.cpu_seconds(), time.monotonic()
    started_wall = time.time()
    execution_id = str((await api.post(f"/api/workflows/{workflow_id}/run?shape=raw", trigger))["execution_id"])
    last: dict[str, Any] = {}

    async def finished() -> bool:
        last.update(await api.execution(execution_id))
        return last["status"] not in ("queued", "running")

    done = await wait_until(finished, args.timeout, interval=0.1)
    cpu = cpu_share(cpu_before, procs.cpu_seconds(), done - start)
    after = await fake_stats(fake_url)
    await asyncio.sleep(1.0)  # visibility catches up before the runs are listed
    trips = _minus(await round_trips(client, holders(workflow_id)), trips_before)
    own = await round_trips(client, [f"newsletter-{execution_id}"])  # the newsletter's workflow, all of it
    trips = {k: trips[k] + own[k] for k in trips}
    sending_s = after["last"] - max(after["first"], started_wall)
    return {
        "recipients": args.recipients,
        "execution_status": last["status"],
        "newsletter_status": (last["result"] or {}).get("status"),
        "sent": (last["result"] or {}).get("sent"),
        "total_s": done - start,
        "recipients_per_s": args.recipients / (done - start),
        "sending_s": sending_s,
        "sending_recipients_per_s": args.recipients / sending_s if sending_s > 0 else None,
        "provider_requests": after["count"] - before["count"],
        "provider_distinct_keys": after["distinct_keys"] - before["distinct_keys"],
        "temporal": trips,
        "round_trips_per_recipient": (trips["workflow_tasks"] + trips["activity_tasks"]) / args.recipients,
        "cpu_cores": cpu,
    }


async def baseline_run(
    args: argparse.Namespace,
    api: Api,
    procs: Processes,
    client: Client,
    workflow_id: str,
    fake_url: str,
    port: int,
    database_url: str,
) -> dict[str, Any]:
    before = await fake_stats(fake_url)
    trips_before = await round_trips(client, holders(workflow_id))
    headers = {"authorization": f"Bearer {api.key}", "content-type": "application/json"}
    path = f"/api/workflows/{workflow_id}/run?shape=raw"
    requests = [
        http_post(path, orjson.dumps({"issue": 1, **s}), headers) for s in subscribers("single", args.recipients)
    ]

    async def all_succeeded() -> bool:
        conn = await db.connect(database_url)
        try:
            row = await conn.fetchrow(
                "SELECT count(*) FILTER (WHERE status = 'succeeded') AS ok, "
                "count(*) FILTER (WHERE status IN ('failed', 'cancelled')) AS bad "
                "FROM executions WHERE workflow_id = $1",
                uuid.UUID(workflow_id),
            )
        finally:
            await conn.close()
        if row["bad"]:
            raise RuntimeError(f"{row['bad']} email.send executions failed; see the worker log")
        return bool(row["ok"] >= args.recipients)

    cpu_before, start = procs.cpu_seconds(), time.monotonic()
    statuses = await post_all(port, requests, 32)
    posted = time.monotonic()
    done = await wait_until(all_succeeded, args.timeout, interval=0.1)
    cpu = cpu_share(cpu_before, procs.cpu_seconds(), done - start)
    after = await fake_stats(fake_url)
    await asyncio.sleep(1.0)
    trips = _minus(await round_trips(client, holders(workflow_id)), trips_before)
    return {
        "recipients": args.recipients,
        "http_statuses": statuses,
        "post_s": posted - start,
        "total_s": done - start,
        "recipients_per_s": args.recipients / (done - start),
        "provider_requests": after["count"] - before["count"],
        "provider_distinct_keys": after["distinct_keys"] - before["distinct_keys"],
        "temporal": trips,
        "round_trips_per_recipient": (trips["workflow_tasks"] + trips["activity_tasks"]) / args.recipients,
        "cpu_cores": cpu,
    }


async def measure(
    args: argparse.Namespace, procs: Processes, port: int, database_url: str, temporal_address: str, fake_url: str
) -> dict[str, Any]:
    conn = await db.connect(database_url)
    try:
        _, key = await create_owner(conn, "bench")
    finally:
        await conn.close()
    api = Api(f"http://127.0.0.1:{port}", key)
    client = await Client.connect(temporal_address)
    try:
        credential = await api.post(
            "/api/credentials", {"provider": "resend", "name": "bench", "secret": {"api_key": "re_bench_key"}}
        )
        endpoint = await api.post("/api/endpoints", {"name": "bench", "scheme": "standard-webhooks"})
        action = newsletter_action(args, credential["id"])
        warm, measured = [await api.workflow(endpoint["id"], action, args.concurrency) for _ in range(2)]
        print("warm-up: a newsletter of 50 ...", flush=True)
        warm_args = argparse.Namespace(**{**vars(args), "recipients": 50})
        await newsletter_run(warm_args, api, procs, client, warm, fake_url)
        print(f"(a) one newsletter to {args.recipients} recipients ...", flush=True)
        newsletter = await newsletter_run(args, api, procs, client, measured, fake_url)
        baseline = None
        if not args.no_baseline:
            single = await api.workflow(endpoint["id"], email_action(credential["id"]), args.concurrency)
            print(f"(b) {args.recipients} email.send executions ...", flush=True)
            baseline = await baseline_run(args, api, procs, client, single, fake_url, port, database_url)
        return {"newsletter": newsletter, "baseline": baseline}
    finally:
        await api.client.aclose()


def report(args: argparse.Namespace, results: dict[str, Any]) -> None:
    nl, base = results["newsletter"], results["baseline"]

    def both(value: Callable[[dict[str, Any]], object]) -> list[object]:
        return [value(nl), "" if base is None else value(base)]

    print()
    print_table(
        ["measure", "(a) newsletter", f"(b) {args.recipients} x email.send"],
        [
            ["recipients/s, end to end", *both(lambda r: r["recipients_per_s"])],
            ["  seconds, end to end", *both(lambda r: r["total_s"])],
            ["recipients/s while sending", nl["sending_recipients_per_s"] or 0.0, ""],
            ["provider requests", *both(lambda r: r["provider_requests"])],
            ["  distinct idempotency keys", *both(lambda r: r["provider_distinct_keys"])],
            ["Temporal workflow tasks", *both(lambda r: r["temporal"]["workflow_tasks"])],
            ["Temporal activity tasks", *both(lambda r: r["temporal"]["activity_tasks"])],
            ["round trips per recipient", *both(lambda r: r["round_trips_per_recipient"])],
        ],
    )
    print(f"\nnewsletter: {nl['execution_status']} / {nl['newsletter_status']}, sent {nl['sent']}")
    print()
    phases = [("(a) newsletter", nl)] + ([] if base is None else [("(b) email.send", base)])
    last = ("(client)", "(other)", "(host busy)")
    names = [n for n in {**nl["cpu_cores"], **(base or nl)["cpu_cores"]} if n not in last] + list(last)
    print_table(["CPU, cores", *names], [[label, *(r["cpu_cores"].get(n, 0.0) for n in names)] for label, r in phases])
    note = disturbance_note(r["cpu_cores"] for _, r in phases)
    if note:
        print(note)
    path = write_results("newsletter", {"config": vars(args), **results})
    print(f"results: {path}")


def main() -> int:
    args = parse_args()
    if args.command == "fake-resend":
        fake_resend(args.port)
        return 0
    if args.command == "worker":
        bench_worker(args.resend_url)
        return 0
    exit_on_sigterm()
    work = Path(tempfile.mkdtemp(prefix="hookyard-bench-newsletter-"))
    procs = Processes(work / "logs")
    try:
        print("starting PostgreSQL (fsync on), Redis, Temporal dev server (SQLite file) ...", flush=True)
        database_url = procs.add_service(*services.start_postgres(work, services.free_port(), durable=True))
        redis_url = procs.add_service(*services.start_redis(work, services.free_port()))
        temporal_address = procs.add_service(*services.start_temporal(work, services.free_port()))
        asyncio.run(migrate(database_url))
        fake_port = services.free_port()
        fake_url = f"http://127.0.0.1:{fake_port}"
        fake = procs.spawn("fake-resend", python_module("bench.newsletter", "fake-resend", "--port", str(fake_port)))
        wait_http(f"{fake_url}/stats", fake)
        _, _, keys_env = master_key()
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
            "HOOKYARD_RATE_LIMITS": "resend=0/s",
            "HOOKYARD_EGRESS_ALLOW": f"127.0.0.1:{fake_port}",  # the fake Resend only
        }
        apps = [procs.spawn(name, hookyard_argv(name), env) for name in ("serve", "dispatch")]
        worker_argv = python_module("bench.newsletter", "worker", "--resend-url", f"{fake_url}/emails")
        apps.append(procs.spawn("worker", worker_argv, env))
        wait_http(f"http://127.0.0.1:{port}/readyz", apps[0])
        results = asyncio.run(measure(args, procs, port, database_url, temporal_address, fake_url))
        report(args, results)
        return 0
    finally:
        procs.close()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
