"""Index check at scale: hookyard's hot queries against a million events and a million executions.

A throwaway PostgreSQL is migrated and bulk-loaded with set-based SQL; each hot query's SQL, captured by calling
the store function itself, runs 5 times (after a warm-up) under EXPLAIN (ANALYZE, BUFFERS) in rolled-back
transactions. Flags a sequential scan on a big table or a median over 10 ms. Run: `python -m bench.scale`.
"""

from __future__ import annotations

import asyncio
import shutil
import statistics
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, cast

import asyncpg

from bench.common import exit_on_sigterm, print_table, write_results
from hookyard import services
from oauth.crypto import Keyring, generate_key
from schemas import db
from schemas.migrate import migrate
from schemas.store import endpoints, events, executions, telemetry, workflows

BIG_TABLES = {"endpoints", "endpoint_secrets", "workflows", "events", "executions"}
SLOW_MS = 10.0
RUNS = 5


def uid(prefix: str, expr: str) -> str:
    """A deterministic, uniformly spread uuid for row number `expr` of a table."""
    return f"md5('{prefix}' || ({expr}))::uuid"


# Row i of each table belongs to owner (i-1) % 1000 + 1; event/execution n arrives on endpoint
# (n-1) % 10000 + 1, which has workflows e + 10000*slot (slot 0..9, exactly one inactive).
OWNER = uid("o", "(i - 1) % 1000 + 1")
ENDPOINT = uid("e", "(i - 1) % 10000 + 1")
LOAD = {
    "owners": f"INSERT INTO owners (id, name) SELECT {uid('o', 'i')}, 'owner-' || i FROM generate_series(1, 1000) i",
    "endpoints": f"INSERT INTO endpoints (id, owner_id, name, scheme) SELECT {uid('e', 'i')}, {OWNER}, 'ep-' || i, "
    "'standard-webhooks' FROM generate_series(1, 10000) i",
    # One current secret each; every 5th endpoint also keeps an expired one from a rotation.
    "endpoint_secrets": "INSERT INTO endpoint_secrets (endpoint_id, ciphertext, expires_at) "
    f"SELECT {ENDPOINT}, 'v1.bench.' || md5(i::text), CASE WHEN i > 10000 THEN now() - interval '1 day' END "
    "FROM generate_series(1, 12000) i WHERE i <= 10000 OR i % 5 = 0",
    "workflows": "INSERT INTO workflows (id, owner_id, name, trigger_type, trigger_config, routing_key, action_type, "
    "action_config, active, retry_policy) "
    f"SELECT {uid('w', 'i')}, {OWNER}, 'wf-' || i, 'webhook.received', "
    f"jsonb_build_object('endpoint_id', {ENDPOINT}::text), {ENDPOINT}::text, 'http.request', "
    """'{"url": "http://127.0.0.1:9/hook", "method": "POST"}', ((i - 1) / 10000 + i) % 10 <> 1, '{}' """
    "FROM generate_series(1, 100000) i",
    # The newest 1,000 events are still 'received'; 1 in 50 of the rest matched nothing.
    "events": "INSERT INTO events (id, owner_id, source_type, source_id, dedup_key, received_at, headers, body, "
    "verification, status, resolution, dispatched_at) "
    f"SELECT {uid('v', 'i')}, {OWNER}, 'webhook', {ENDPOINT}::text, 'msg_' || i, "
    "now() - (1000000 - i) * interval '1 second', '{\"content-type\": \"application/json\"}', "
    "convert_to('{\"type\":\"order.paid\",\"n\":' || i || ',\"pad\":\"' || repeat('x', 120) || '\"}', 'UTF8'), "
    "'{\"scheme\": \"standard-webhooks\"}', s, CASE WHEN s <> 'received' THEN '[]'::jsonb END, "
    "CASE WHEN s <> 'received' THEN now() - (1000000 - i) * interval '1 second' END "
    "FROM generate_series(1, 1000000) i, LATERAL (SELECT CASE WHEN i > 999000 THEN 'received' "
    "WHEN ((i - 1) / 10000 + i) % 50 = 0 THEN 'unmatched' ELSE 'dispatched' END) st(s)",
    # Execution i: event i by workflow slot (i-1)/10000 % 10; the newest 1,000 (queued, not yet
    # handed over) belong to events 10,000 older, from the next slot's workflow.
    "executions": "INSERT INTO executions (id, owner_id, workflow_id, event_id, status, trigger_data, attempts, "
    "created_at, started_at, finished_at, signalled_at) "
    f"SELECT {uid('x', 'i')}, {OWNER}, {uid('w', '(i - 1) % 10000 + 1 + 10000 * ((i - 1) / 10000 % 10)')}, "
    f'{uid("v", "CASE WHEN i > 999000 THEN i - 10000 ELSE i END")}, s, \'{{"event_type": "order.paid"}}\', '
    "CASE WHEN s = 'queued' THEN 0 ELSE 1 END, now() - (1000000 - i) * interval '1 second', "
    "CASE WHEN s <> 'queued' THEN now() END, CASE WHEN s IN ('succeeded', 'failed', 'cancelled') THEN now() END, "
    "CASE WHEN i <= 999000 THEN now() END "
    "FROM generate_series(1, 1000000) i, LATERAL (SELECT (7 * ((i - 1) / 10000) + i) % 20 AS r) h, "
    "LATERAL (SELECT CASE WHEN i > 999000 THEN 'queued' WHEN r = 0 THEN 'failed' WHEN r = 1 THEN 'cancelled' "
    "WHEN r = 2 THEN 'running' WHEN r = 3 THEN 'queued' ELSE 'succeeded' END) st(s)",
}


class Recorder:
    """Stands in for a connection: records each statement and its arguments, returns nothing."""

    def __init__(self) -> None:
        self.statements: list[tuple[str, tuple[Any, ...]]] = []

    async def fetch(self, sql: str, *args: Any) -> list[Any]:
        if "pg_notify" not in sql:
            self.statements.append((sql, args))
        return []

    async def execute(self, sql: str, *args: Any) -> str:
        await self.fetch(sql, *args)
        return "UPDATE 0"

    fetchrow = fetchval = fetch

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[None]:
        yield


async def capture(call: Callable[[asyncpg.Connection], Awaitable[object]]) -> list[tuple[str, tuple[Any, ...]]]:
    """The statements a store function sends, with their arguments."""
    recorder = Recorder()
    await call(cast(asyncpg.Connection, recorder))
    return recorder.statements


def access(plan: dict[str, Any]) -> tuple[list[str], list[str]]:
    """(indexes used, tables read by a sequential scan) anywhere in the plan."""
    found, todo = [], [plan]
    while todo:
        found.append(todo.pop())
        todo.extend(found[-1].get("Plans", []))
    indexes = sorted({n["Index Name"] for n in found if "Index Name" in n})
    seqs = sorted({n["Relation Name"] for n in found if n["Node Type"] == "Seq Scan"})
    return indexes, seqs


async def load(url: str) -> dict[str, float]:
    """Fill the tables (the big two side by side) without FK checks: the data is consistent by construction."""
    timings: dict[str, float] = {}

    async def run(statements: list[tuple[str, str]]) -> None:
        conn = await asyncpg.connect(url)
        try:
            await conn.execute("SET session_replication_role = replica; SET maintenance_work_mem = '256MB'")
            for name, sql in statements:
                start = time.monotonic()
                await conn.execute(sql)
                timings[name] = round(time.monotonic() - start, 1)
                print(f"  {name}: {timings[name]:.1f}s", flush=True)
        finally:
            await conn.close()

    big = ("events", "executions")
    await run([(t, sql) for t, sql in LOAD.items() if t not in big])
    await asyncio.gather(*(run([(t, LOAD[t])]) for t in big))
    await asyncio.gather(*(run([(f"vacuum analyze {t}", f"VACUUM (ANALYZE) {t}")]) for t in big))
    await run([("vacuum analyze rest", "VACUUM (ANALYZE) owners, endpoints, endpoint_secrets, workflows")])
    return timings


async def cases(conn: asyncpg.Connection) -> dict[str, list[tuple[str, tuple[Any, ...]]]]:
    """Each hot query's statements, with parameters taken from the loaded data."""
    owner, endpoint_id = await conn.fetchrow("SELECT owner_id, id FROM endpoints WHERE seq = 4242")
    source = str(endpoint_id)
    route = await conn.fetch("SELECT id FROM workflows WHERE routing_key = $1 AND active ORDER BY seq", source)
    wf_id = route[0]["id"]
    deep = await conn.fetchval("SELECT seq FROM workflows WHERE owner_id = $1 ORDER BY seq DESC OFFSET 90", owner)
    event_id = await conn.fetchval("SELECT id FROM events WHERE source_id = $1 ORDER BY seq DESC LIMIT 1", source)
    execution_id = await conn.fetchval("SELECT id FROM executions WHERE workflow_id = $1 LIMIT 1", wf_id)
    queued = await conn.fetchval("SELECT array(SELECT id FROM executions WHERE signalled_at IS NULL LIMIT 50)")
    new_events = [
        events.NewEvent(owner, "webhook", source, f"msg_{uuid.uuid4()}", {"content-type": "application/json"},
                        b'{"type":"order.paid","n":1}', {"scheme": "standard-webhooks"})
        for _ in range(500)
    ]  # fmt: skip
    keyring = Keyring([("bench", generate_key())])
    calls: dict[str, Callable[[asyncpg.Connection], Awaitable[object]]] = {
        "workflows.active_for_route": lambda c: workflows.active_for_route(c, "webhook.received", source),
        "workflows.routing_version": workflows.routing_version,
        "workflows.lock_active": lambda c: workflows.lock_active(c, [r["id"] for r in route]),
        "workflows.list_workflows first page": lambda c: workflows.list_workflows(c, owner, limit=50),
        "workflows.list_workflows deep cursor": lambda c: workflows.list_workflows(c, owner, limit=50, after_seq=deep),
        "events.claim_received (500)": lambda c: events.claim_received(c, 500),
        # The resolve pass's event-by-event retry after a failed batch, and every api /readyz.
        "events.claim_received (one)": lambda c: events.claim_received(c, 1, only=event_id),
        "telemetry.oldest_waiting_age": telemetry.oldest_waiting_age,
        "events.list_events first page": lambda c: events.list_events(c, owner, limit=50),
        "events.list_events status": lambda c: events.list_events(c, owner, limit=50, status="received"),
        "events.list_events source_id": lambda c: events.list_events(c, owner, limit=50, source_id=source),
        "events.get_event": lambda c: events.get_event(c, owner, event_id),
        "executions.handover_workflows": lambda c: executions.handover_workflows(c, 5000),
        "executions.claim_handover (500)": lambda c: executions.claim_handover(c, [wf_id], 500, 5000),
        "executions.list_for_workflow": lambda c: executions.list_for_workflow(c, owner, wf_id, limit=50),
        "executions.list_for_workflow status": lambda c: executions.list_for_workflow(
            c, owner, wf_id, limit=50, status="succeeded"
        ),
        "executions.list_for_event": lambda c: executions.list_for_event(c, owner, event_id),
        "executions.get_execution": lambda c: executions.get_execution(c, owner, execution_id),
        "endpoints.load_auth": lambda c: endpoints.load_auth(c, keyring, endpoint_id),
        "endpoints.list_endpoints": lambda c: endpoints.list_endpoints(c, owner, limit=50),
        # Writers last: their rolled-back rows leave dead index entries behind.
        "events.insert_events (500 new)": lambda c: events.insert_events(c, new_events),
        "executions.claim_for_run (50)": lambda c: executions.claim_for_run(c, queued, "wf-bench", "run-bench"),
    }
    return {name: await capture(call) for name, call in calls.items()}


def summary(explained: list[dict[str, Any]]) -> dict[str, Any]:
    """Median times of the runs and what the last run's plan read."""
    plan = explained[-1]["Plan"]
    indexes, seqs = access(plan)
    return {
        "ms": round(statistics.median(e["Execution Time"] for e in explained), 3),
        "planning_ms": round(statistics.median(e["Planning Time"] for e in explained), 3),
        "rows": plan.get("Actual Rows"),
        "shared_hit": plan.get("Shared Hit Blocks"),
        "shared_read": plan.get("Shared Read Blocks"),
        "indexes": indexes,
        "seq_scans": seqs,
        "big_seq_scans": [t for t in seqs if t in BIG_TABLES],
        "top_node": plan["Node Type"],
    }


async def measure(conn: asyncpg.Connection, statements: list[tuple[str, tuple[Any, ...]]]) -> list[dict[str, Any]]:
    """EXPLAIN ANALYZE the statements RUNS times, each run in a rolled-back transaction: with the
    parameters bound (a custom plan), then via PREPARE/EXECUTE with a forced generic plan (which
    asyncpg's statement cache may get from a statement's sixth execution on)."""
    prepared = []
    for i, (sql, args) in enumerate(statements):
        types = (await conn.prepare(sql)).get_parameters()
        literals = [
            await conn.fetchval(f"SELECT quote_nullable($1::{t.schema}.{t.name})", a)
            for t, a in zip(types, args, strict=True)
        ]
        await conn.execute(f"PREPARE scale_{i} AS {sql}")
        prepared.append((f"EXECUTE scale_{i}" + (f"({', '.join(literals)})" if literals else ""), ()))

    async def explain(stmts: list[tuple[str, tuple[Any, ...]]], setup: str) -> list[dict[str, Any]]:
        runs: list[list[dict[str, Any]]] = [[] for _ in stmts]
        for run in range(RUNS + 1):  # run 0 only warms the cache
            tx = conn.transaction()
            await tx.start()
            try:
                await conn.execute(setup)
                for i, (sql, args) in enumerate(stmts):
                    out = await conn.fetchval(f"EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) {sql}", *args)
                    runs[i] += [out[0]] if run else []
            finally:
                await tx.rollback()
        return [summary(r) for r in runs]

    custom = await explain(statements, "SET LOCAL plan_cache_mode = force_custom_plan")
    generic = await explain(prepared, "SET LOCAL plan_cache_mode = force_generic_plan")
    for i in range(len(statements)):
        await conn.execute(f"DEALLOCATE scale_{i}")
    return [{**c, "generic": g, "sql": sql} for c, g, (sql, _) in zip(custom, generic, statements, strict=True)]


async def bench(url: str) -> dict[str, Any]:
    await migrate(url)
    started = time.monotonic()
    timings = await load(url)
    conn = await db.connect(url)
    try:
        load_s = round(time.monotonic() - started, 1)
        counts = {t: await conn.fetchval(f"SELECT count(*) FROM {t}") for t in LOAD}
        print(f"  loaded and analyzed in {load_s:.1f}s: {counts}", flush=True)
        results: dict[str, dict[str, Any]] = {}
        for name, statements in (await cases(conn)).items():
            for i, result in enumerate(await measure(conn, statements)):
                label = name if len(statements) == 1 else f"{name} [{i + 1}/{len(statements)}]"
                plans = (result, result["generic"])
                result["flag"] = any(p["big_seq_scans"] or p["ms"] > SLOW_MS for p in plans)
                results[label] = result
    finally:
        await conn.close()
    return {"rows": counts, "load_seconds": timings, "load_total_s": load_s, "slow_ms": SLOW_MS, "queries": results}


def report(data: dict[str, Any]) -> None:
    def used(r: dict[str, Any], custom: dict[str, Any] | None = None) -> str:
        if custom is not None and (r["indexes"], r["seq_scans"]) == (custom["indexes"], custom["seq_scans"]):
            return "same"
        if r["big_seq_scans"]:
            return "NO: seq scan on " + ", ".join(r["big_seq_scans"])
        if r["indexes"]:
            return "yes: " + ", ".join(r["indexes"])
        return "n/a: " + (f"seq scan on {', '.join(r['seq_scans'])} (small)" if r["seq_scans"] else r["top_node"])

    rows = [
        (name, r["ms"], used(r), r["generic"]["ms"], used(r["generic"], r), "FLAG" if r["flag"] else "")
        for name, r in data["queries"].items()
    ]
    print()
    print_table(["query", "ms", "index used?", "generic ms", "generic plan", ""], rows)
    flagged = [name for name, r in data["queries"].items() if r["flag"]]
    print(f"\nflagged (seq scan on a big table or median > {SLOW_MS:g} ms): {', '.join(flagged) or 'none'}")


def main() -> None:
    exit_on_sigterm()
    tmp = Path(tempfile.mkdtemp(prefix="hookyard-scale-"))
    proc = None
    try:
        proc, url = services.start_postgres(tmp, services.free_port(), durable=False)
        data = asyncio.run(bench(url))
        report(data)
        print(f"\nwrote {write_results('scale', data)}")
    finally:
        if proc is not None:
            proc.stop()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
