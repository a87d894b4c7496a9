"""Ingest throughput: `hookyard serve` against a bare verify-only endpoint, side by side, one run.

Both targets verify Standard Webhooks signatures in one Python process; hookyard also stores
every event durably (PostgreSQL, fsync on) before it answers. wrk drives each target in turn
(bare, hookyard, bare, hookyard, ...) with pre-signed requests, each with its own webhook-id.
Afterwards every event id hookyard answered 2xx for is looked up in `events`: nothing lost.

Run: `python -m bench.ingest [--quick]` (needs `wrk`: `apt-get install -y wrk`).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any
from uuid import UUID

if __package__ in (None, ""):  # run as a file: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import (
    SIGNER,
    Processes,
    cpu_share,
    create_routes,
    disturbance_note,
    event_body,
    exit_on_sigterm,
    hookyard_argv,
    master_key,
    print_table,
    python_module,
    wait_http,
    write_results,
)
from hookyard import services
from oauth.crypto import Keyring
from schemas import db
from schemas.migrate import migrate

LUA = Path(__file__).resolve().parent / "wrk_signed.lua"
TARGET_RATIO = 0.60


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per measured run (default 10)")
    parser.add_argument("--rounds", type=int, default=2, help="interleaved rounds of (bare, hookyard) (default 2)")
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds of unmeasured load per target first")
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2, help="wrk threads")
    parser.add_argument("--requests", type=int, default=100_000, help="distinct signed requests per run")
    parser.add_argument("--quick", action="store_true", help="smoke run: 3 s runs, 1 round, 30k requests")
    args = parser.parse_args()
    if args.quick:
        args.duration, args.rounds, args.warmup, args.requests = 3.0, 1, 1.0, 30_000
    return args


def write_requests(path: Path, endpoint_id: UUID, secret: str, count: int, prefix: str) -> None:
    """`count` signed requests (unique webhook-ids `<prefix>-<n>`) in the format wrk_signed.lua reads."""
    now = time.time()
    with path.open("w") as out:
        for n in range(count):
            msg_id = f"msg_{prefix}_{n}"
            body = event_body(msg_id, n)
            h = SIGNER.sign(body, secret, now=now, msg_id=msg_id)
            out.write(f"/hooks/{endpoint_id}\t{msg_id}\t{h['webhook-timestamp']}\t{h['webhook-signature']}\t")
            out.write(body.decode() + "\n")


def run_wrk(base_url: str, data: Path, out: Path, args: argparse.Namespace, duration: float) -> dict[str, Any]:
    """One wrk run; returns the summary its done() wrote, plus the 2xx event ids."""
    env = {**os.environ, "BENCH_DATA": str(data), "BENCH_OUT": str(out), "BENCH_THREADS": str(args.threads)}
    argv = ["wrk", "-t", str(args.threads), "-c", str(args.connections), "-d", f"{duration:g}s", "--latency"]
    argv += ["--timeout", "10s", "-s", str(LUA), base_url]
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=duration + 180)
    if done.returncode != 0 or not out.exists():
        raise RuntimeError(f"wrk failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    result: dict[str, Any] = json.loads(out.read_text())
    result["ids"] = Path(f"{out}.ids").read_text().split()
    secs = result["duration_us"] / 1e6
    result["rps"] = result["requests"] / secs
    result["ok_rps"] = (result["s202"] + result["s200"] + result["other2xx"]) / secs
    return result


async def verify_stored(database_url: str, endpoint_id: UUID, ids: list[str]) -> dict[str, int]:
    """Rows in `events` for the endpoint, and how many 2xx-answered ids are missing from it."""
    conn = await db.connect(database_url)
    try:
        rows = await conn.fetchval("SELECT count(*) FROM events WHERE source_id = $1", str(endpoint_id))
        found = await conn.fetchval("SELECT count(*) FROM events WHERE id = ANY($1::uuid[])", ids)
    finally:
        await conn.close()
    return {"rows": rows, "acknowledged": len(ids), "distinct_acknowledged": len(set(ids)), "missing": len(ids) - found}


def main() -> int:
    args = parse_args()
    exit_on_sigterm()
    if shutil.which("wrk") is None:
        print("wrk is not installed; install it with `apt-get install -y wrk` and run again.", file=sys.stderr)
        return 2
    work = Path(tempfile.mkdtemp(prefix="hookyard-bench-ingest-"))
    procs = Processes(work / "logs")
    try:
        print("starting PostgreSQL (fsync on) and Redis ...", flush=True)
        pg, database_url = services.start_postgres(work, services.free_port(), durable=True)
        procs.add(pg)
        rd, redis_url = services.start_redis(work, services.free_port())
        procs.add(rd)
        asyncio.run(migrate(database_url))
        kid, key, keys_env = master_key()
        _, routes = asyncio.run(create_routes(database_url, Keyring([(kid, key)]), 1, None))
        endpoint_id, secret = routes[0].endpoint_id, routes[0].secret

        bare_port, hy_port = services.free_port(), services.free_port()
        bare = procs.spawn("bare", python_module("bench.bare_app", "--port", str(bare_port)), {"BENCH_SECRET": secret})
        env = {
            "DATABASE_URL": database_url,
            "REDIS_URL": redis_url,
            "HOOKYARD_PORT": str(hy_port),
            "HOOKYARD_MASTER_KEYS": keys_env,
            "HOOKYARD_LOG_LEVEL": "WARNING",
        }
        serve = procs.spawn("serve", hookyard_argv("serve"), env)
        targets = {"bare": f"http://127.0.0.1:{bare_port}", "hookyard": f"http://127.0.0.1:{hy_port}"}
        wait_http(f"{targets['bare']}/healthz", bare)
        wait_http(f"{targets['hookyard']}/readyz", serve)

        data = work / "requests.tsv"
        runs: list[dict[str, Any]] = []
        hookyard_ids: list[str] = []
        plan = [("warmup", name) for name in targets] + [
            (f"round {r + 1}", name) for r in range(args.rounds) for name in targets
        ]
        for n, (label, name) in enumerate(plan):
            write_requests(data, endpoint_id, secret, args.requests, f"{n}")
            duration = args.warmup if label == "warmup" else args.duration
            print(f"{label}: {name} for {duration:g}s ...", flush=True)
            before = procs.cpu_seconds()
            result = run_wrk(targets[name], data, work / f"wrk-{n}.json", args, duration)
            # Servers idle while wrk loads its data, so their CPU over the load time is close.
            used = cpu_share(before, procs.cpu_seconds(), result["duration_us"] / 1e6)
            result["cpu_cores"] = used
            if name == "hookyard":
                hookyard_ids += result.pop("ids")
            else:
                result.pop("ids")
            runs.append({"label": label, "target": name, **result})
            if result["wrapped"]:
                print(f"  note: {name} used all {args.requests} requests; raise --requests", flush=True)

        stored = asyncio.run(verify_stored(database_url, endpoint_id, hookyard_ids))
        measured = [r for r in runs if r["label"] != "warmup"]
        summary = {
            name: {
                "rps": sum(r["ok_rps"] for r in measured if r["target"] == name) / args.rounds,
                "p50_ms": sum(r["latency_us"]["p50"] for r in measured if r["target"] == name) / args.rounds / 1000,
                "p99_ms": sum(r["latency_us"]["p99"] for r in measured if r["target"] == name) / args.rounds / 1000,
            }
            for name in targets
        }
        ratio = summary["hookyard"]["rps"] / summary["bare"]["rps"]
        print()
        rows = [
            [
                r["label"],
                r["target"],
                r["ok_rps"],
                r["latency_us"]["p50"] / 1000,
                r["latency_us"]["p99"] / 1000,
                r["cpu_cores"]["bare" if r["target"] == "bare" else "serve"],
                r["cpu_cores"]["postgres"],
                r["cpu_cores"]["(client)"],
                r["cpu_cores"]["(other)"],
                r["non2xx"] + sum(r["errors"].values()),
            ]
            for r in measured
        ]
        rows += [["mean", name, s["rps"], s["p50_ms"], s["p99_ms"], "", "", "", "", ""] for name, s in summary.items()]
        headers = ["run", "target", "2xx req/s", "p50 ms", "p99 ms", "CPU: server", "postgres", "wrk", "other"]
        print_table([*headers, "errors"], rows)
        note = disturbance_note(r["cpu_cores"] for r in measured)
        if note:
            print(note)
        verdict = "meets" if ratio >= TARGET_RATIO else "misses"
        print(f"\nhookyard / bare = {ratio:.0%} (target >= {TARGET_RATIO:.0%}: {verdict})")
        extra = stored["rows"] - stored["distinct_acknowledged"]
        hy_runs = sum(1 for r in runs if r["target"] == "hookyard")
        print(
            f"stored: {stored['rows']} rows in events; {stored['acknowledged']} 2xx answers from hookyard, "
            f"{stored['missing']} of them missing from events (lost); {extra} rows more than 2xx answers "
            f"(still in flight when wrk stopped: at most {args.connections} x {hy_runs} runs)"
        )
        path = write_results(
            "ingest",
            {
                "config": {k: v for k, v in vars(args).items()},
                "runs": runs,
                "summary": summary,
                "ratio": ratio,
                "target_ratio": TARGET_RATIO,
                "stored": stored,
            },
        )
        print(f"results: {path}")
        return 0 if stored["missing"] == 0 else 1
    finally:
        procs.close()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
