"""The fault ledger: signed events through a `hookyard dev` stack while its parts are killed.

The run starts its own `hookyard dev` (temp data dir, free ports) with the apps reaching
PostgreSQL through a fault proxy (bench/pgproxy.py), creates one owner, one endpoint and two
http.request workflows (one matching every event, one only events with `kind = even`), and
a loopback receiver as their target. The receiver answers 503 the first time for a
deterministic 5 % of (workflow, event) pairs and records every request with its
idempotency key.

N signed events are sent by 64 concurrent senders that retry as real senders do: the same
webhook id and body again (re-signed), with backoff, on 5xx, timeouts and connection
errors, until a 2xx (accepted) or a 4xx (rejected). Sends are paced over the fault window.

Faults, one every --fault-gap seconds: kill -9 of the api, the dispatcher and the worker
(each twice), of Temporal, PostgreSQL and Redis (`hookyard dev` brings them back), and a 5 s
PostgreSQL blackout at the proxy; all along, the proxy resets 0.5 % of new connections and
cuts a live one every ~20 s.

The ledger: sent, accepted, expected executions, delivered exactly once, duplicated (split:
the same idempotency key with a worker kill between the two deliveries, which is the
at-least-once edge the key exists for; the same key otherwise; different keys), missing,
executions by status, drain time, the fault timeline and the longest delivery stall after
each fault. Exit status 1 unless missing = 0, no (workflow, event) was delivered under two
keys, no same-key duplicate without a worker kill between (a storage fault's), and every
stall is at most 10 s.

Run: `python -m bench.chaos [--events N] [--senders N] [--no-faults] [--seed N] [--json]`
(`make chaos`). `--quick` kills each app process once and nothing else (the suite's version).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import itertools
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a file: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx

from bench.common import exit_on_sigterm, http_post, new_secret, read_status, signed_headers, write_results
from bench.pgproxy import FaultProxy
from hookyard import services
from schemas import db

STALL_LIMIT_S = 10.0
FAIL_ONCE_PER_MILLE = 50  # 5 % of (workflow, event) pairs answer 503 the first time
APP_COMMANDS = {"api": "serve", "dispatcher": "dispatch", "worker": "worker"}
SERVER_BINARIES = {"temporal": "temporal", "postgres": "postgres", "redis": "redis-server"}
FULL_PLAN = (
    "kill api",
    "kill worker",
    "kill dispatcher",
    "kill postgres",
    "kill worker",
    "kill api",
    "kill temporal",
    "kill dispatcher",
    "pg blackout 5s",
    "kill redis",
)
# The worker first: its kill costs the longest resume, which then overlaps the others.
QUICK_PLAN = ("kill worker", "kill dispatcher", "kill api")
WORKFLOWS = {"all": None, "even": {"path": "body.kind", "op": "equals", "value": "even"}}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=10_000, help="signed events to send (default 10,000)")
    parser.add_argument("--senders", type=int, default=64, help="concurrent senders (default 64)")
    parser.add_argument("--no-faults", action="store_true", help="the same run without any fault")
    parser.add_argument("--quick", action="store_true", help="kill each app process once, no other fault")
    parser.add_argument("--seed", type=int, default=1, help="seeds every random choice (default 1)")
    parser.add_argument("--json", action="store_true", help="print the ledger as JSON")
    parser.add_argument("--fault-gap", type=float, default=12.0, help="seconds between faults (default 12)")
    parser.add_argument("--cut-every", type=float, default=20.0, help="cut a live PostgreSQL connection (s)")
    parser.add_argument("--reset-share", type=float, default=0.005, help="new PostgreSQL connections reset")
    parser.add_argument("--drain-timeout", type=float, default=1800.0, help="give up waiting after this (s)")
    parser.add_argument("--keep", action="store_true", help="keep the data dir (logs) after the run")
    return parser.parse_args(argv)


# --- the receiver ---------------------------------------------------------------------------


@dataclass
class Request:
    at: float
    workflow: str
    event: str
    key: str
    status: int


# A request the killed worker wrote just before dying is read and recorded by this process's
# receiver a little later: it shares its event loop with 64 senders and the PostgreSQL proxy.
# Nothing else can send in that window: the restarted worker needs longer than this to start,
# and the lost batch is retried only after the heartbeat timeout (5 s). So a kill up to this
# long before the first recorded delivery still counts as "between" the two deliveries.
KILL_TO_RECORD_S = 1.0


@dataclass
class Receiver:
    """The action target: answers 503 once for a deterministic share, 200 otherwise."""

    seed: int
    requests: list[Request] = field(default_factory=list)
    seen: set[tuple[str, str]] = field(default_factory=set)

    def fails_once(self, workflow: str, event: str) -> bool:
        digest = hashlib.sha256(f"{self.seed}:{workflow}:{event}".encode()).digest()
        return int.from_bytes(digest[:4], "big") % 1000 < FAIL_ONCE_PER_MILLE

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                path = lines[0].split(" ")[1] if len(lines[0].split(" ")) > 1 else "/"
                headers = {}
                for line in lines[1:]:
                    name, _, value = line.partition(":")
                    headers[name.strip().lower()] = value.strip()
                body = await reader.readexactly(int(headers.get("content-length", "0") or 0))
                self.record(path, headers, body, writer)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError):
            pass
        finally:
            writer.close()

    def record(self, path: str, headers: dict[str, str], body: bytes, writer: asyncio.StreamWriter) -> None:
        workflow = path.rstrip("/").rsplit("/", 1)[-1]
        try:
            event = str(json.loads(body).get("id"))
        except (ValueError, AttributeError):
            event = ""
        pair = (workflow, event)
        status = 200
        if pair not in self.seen:
            self.seen.add(pair)
            if self.fails_once(workflow, event):
                status = 503
        self.requests.append(Request(time.time(), workflow, event, headers.get("idempotency-key", ""), status))
        reason = b"OK" if status == 200 else b"Service Unavailable"
        writer.write(b"HTTP/1.1 %d %s\r\ncontent-length: 2\r\ncontent-type: text/plain\r\n\r\nok" % (status, reason))

    def delivered(self) -> set[tuple[str, str]]:
        return {(r.workflow, r.event) for r in self.requests if r.status < 300}


# --- the stack ------------------------------------------------------------------------------


@dataclass
class Stack:
    data_dir: Path
    proc: subprocess.Popen[bytes]
    console: Path
    api_port: int
    postgres_port: int

    def pid_of(self, part: str) -> int | None:
        """The pid of one of the stack's processes (a direct child of `hookyard dev`)."""
        for pid in services.child_pids(self.proc.pid):
            argv = services.cmdline(pid)
            if not argv:
                continue
            if part in APP_COMMANDS and "hookyard.cli" in argv and argv[-1] == APP_COMMANDS[part]:
                return pid
            if part in SERVER_BINARIES and Path(argv[0].split()[0]).name == SERVER_BINARIES[part]:
                return pid
        return None


def start_stack(data_dir: Path, proxy_port: int) -> Stack:
    ports = {
        "port": services.free_port(),
        "postgres-port": services.free_port(),
        "redis-port": services.free_port(),
        "temporal-port": services.free_port(),
        "temporal-ui-port": services.free_port(),
        "dispatcher-metrics-port": services.free_port(),
        "worker-metrics-port": services.free_port(),
        "app-postgres-port": proxy_port,
    }
    argv = [sys.executable, "-m", "hookyard.cli", "dev", "--data-dir", str(data_dir)]
    for flag, port in ports.items():
        argv += [f"--{flag}", str(port)]
    drop = {"DATABASE_URL", "REDIS_URL", "TEMPORAL_ADDRESS"}
    env = {k: v for k, v in os.environ.items() if k not in drop}
    env.setdefault("HOOKYARD_LOG_LEVEL", "WARNING")
    console = data_dir / "console.log"
    data_dir.mkdir(parents=True, exist_ok=True)
    with console.open("wb") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    return Stack(data_dir, proc, console, ports["port"], ports["postgres-port"])


async def wait_ready(stack: Stack, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    async with httpx.AsyncClient(timeout=2) as http:
        while True:
            if stack.proc.poll() is not None:
                raise RuntimeError(f"hookyard dev exited:\n{stack.console.read_text(errors='replace')[-3000:]}")
            with contextlib.suppress(httpx.HTTPError):
                if (await http.get(f"http://127.0.0.1:{stack.api_port}/readyz")).status_code == 200:
                    return
            if time.monotonic() > deadline:
                raise RuntimeError("hookyard dev did not become ready")
            await asyncio.sleep(0.3)


def stop_stack(stack: Stack) -> int | None:
    if stack.proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(stack.proc.pid, signal.SIGTERM)
        try:
            stack.proc.wait(120)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(stack.proc.pid, signal.SIGKILL)
    return stack.proc.returncode


async def set_up(stack: Stack, receiver_url: str) -> tuple[str, str]:
    """An owner, an endpoint and the two workflows; returns (endpoint id, secret)."""
    created = subprocess.run(
        [sys.executable, "-m", "hookyard.cli", "owners", "create", "chaos", "--data-dir", str(stack.data_dir)],
        capture_output=True,
        text=True,
        check=True,
        env={k: v for k, v in os.environ.items() if k != "DATABASE_URL"},
    )
    key = created.stdout.split("API key: ")[1].split()[0]
    secret = new_secret()
    base = f"http://127.0.0.1:{stack.api_port}"
    async with httpx.AsyncClient(base_url=base, headers={"authorization": f"Bearer {key}"}, timeout=30) as api:
        answer = await api.post(
            "/api/endpoints", json={"name": "chaos", "scheme": "standard-webhooks", "secret": secret}
        )
        answer.raise_for_status()
        endpoint_id = str(answer.json()["id"])
        for name, condition in WORKFLOWS.items():
            trigger: dict[str, Any] = {"endpoint_id": endpoint_id}
            if condition:
                trigger["filter"] = condition
            body = {
                "name": name,
                "trigger": {"type": "webhook.received", "config": trigger},
                "action": {
                    "type": "http.request",
                    "config": {"url": f"{receiver_url}/r/{name}", "body": {"id": "{{ trigger.body.id }}"}},
                },
            }
            answer = await api.post("/api/workflows", json=body)
            if answer.status_code != 201:
                raise RuntimeError(f"workflow {name}: {answer.status_code} {answer.text}")
    return endpoint_id, secret


# --- senders ---------------------------------------------------------------------------------


def event_body(n: int) -> tuple[str, bytes]:
    event_id = f"ev-{n:06d}"
    doc = {"id": event_id, "type": "order.created", "kind": "even" if n % 2 == 0 else "odd", "n": n}
    return event_id, json.dumps(doc, separators=(",", ":")).encode()


@dataclass
class Sending:
    accepted: dict[str, float] = field(default_factory=dict)
    rejected: dict[str, int] = field(default_factory=dict)
    gave_up: set[str] = field(default_factory=set)
    attempts: Counter[str] = field(default_factory=Counter)  # by outcome: "202", "503", "conn"...
    last_sent: float = 0.0


async def send_all(
    args: argparse.Namespace, port: int, endpoint_id: str, secret: str, rate: float, rng: random.Random
) -> Sending:
    """Send every event; each sender retries its event like a real webhook sender."""
    result = Sending()
    queue = iter(range(args.events))
    start = time.monotonic()
    give_up_s = args.drain_timeout

    async def one_sender(seed: int) -> None:
        local = random.Random(seed)
        conn: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
        for n in queue:
            due = start + n / rate
            if (wait := due - time.monotonic()) > 0:
                await asyncio.sleep(wait)
            event_id, body = event_body(n)
            msg_id, first, delay = f"msg_{event_id}", time.monotonic(), 0.2
            while True:
                outcome = "conn"
                try:
                    if conn is None:
                        conn = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 5)
                    request = http_post(f"/hooks/{endpoint_id}", body, signed_headers(body, secret, msg_id))
                    conn[1].write(request)
                    status, _ = await read_status(conn[0], timeout=30)
                    outcome = str(status)
                except (TimeoutError, OSError, asyncio.IncompleteReadError, ValueError):
                    if conn is not None:
                        conn[1].transport.abort()
                    conn = None
                result.attempts[outcome] += 1
                if outcome != "conn" and int(outcome) < 300:
                    result.accepted[event_id] = time.time()
                    break
                if outcome != "conn" and int(outcome) < 500 and int(outcome) != 429:
                    result.rejected[event_id] = int(outcome)
                    break
                if time.monotonic() - first > give_up_s:
                    result.gave_up.add(event_id)
                    break
                await asyncio.sleep(delay * (0.5 + local.random()))
                delay = min(delay * 2, 5.0)
            result.last_sent = time.time()
        if conn is not None:
            conn[1].close()

    await asyncio.gather(*(one_sender(rng.randrange(2**32)) for _ in range(args.senders)))
    return result


# --- faults ----------------------------------------------------------------------------------


@dataclass
class Timeline:
    entries: list[tuple[float, str]] = field(default_factory=list)
    faults: list[tuple[float, str]] = field(default_factory=list)
    worker_kills: list[float] = field(default_factory=list)

    def note(self, text: str) -> None:
        self.entries.append((time.time(), text))

    def fault(self, text: str) -> None:
        now = time.time()
        self.faults.append((now, text))
        self.entries.append((now, text))
        if text == "kill worker":
            self.worker_kills.append(now)


async def run_faults(plan: tuple[str, ...], gap: float, stack: Stack, proxy: FaultProxy, timeline: Timeline) -> None:
    for step in plan:
        await asyncio.sleep(gap)
        if step.startswith("kill "):
            part = step.split()[1]
            pid = None
            for _ in range(100):  # a part being restarted has no pid yet
                if (pid := stack.pid_of(part)) is not None:
                    break
                await asyncio.sleep(0.1)
            if pid is None:
                timeline.note(f"could not find {part} to kill")
                continue
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            timeline.fault(step)
        elif step.startswith("pg blackout"):
            dropped = proxy.blackout(5.0)
            timeline.fault(f"{step} ({dropped} connections dropped)")
    await asyncio.sleep(gap)


async def cut_periodically(every: float, proxy: FaultProxy, timeline: Timeline, rng: random.Random) -> None:
    while True:
        await asyncio.sleep(every * (0.75 + rng.random() / 2))
        if proxy.cut_one():
            timeline.fault("pg proxy: live connection cut")


async def follow_console(stack: Stack, timeline: Timeline) -> None:
    """Stamp what `hookyard dev` says about restarts as it says it."""
    offset = 0
    while True:
        with contextlib.suppress(OSError):
            text = stack.console.read_bytes()[offset:]
            offset += len(text)
            for line in text.decode(errors="replace").splitlines():
                if line.startswith("hookyard dev:") and any(w in line for w in ("restart", "back", "died")):
                    timeline.note(line.removeprefix("hookyard dev: "))
        await asyncio.sleep(0.2)


# --- the ledger ------------------------------------------------------------------------------


def expected_pairs(accepted: dict[str, float]) -> set[tuple[str, str]]:
    pairs = set()
    for event_id in accepted:
        pairs.add(("all", event_id))
        if int(event_id.split("-")[1]) % 2 == 0:
            pairs.add(("even", event_id))
    return pairs


def stalls(faults: list[tuple[float, str]], deliveries: list[float], end: float) -> list[dict[str, Any]]:
    """Per fault: the longest gap between deliveries from the fault until the next fault.

    The gap from the fault to the first delivery after it counts; a gap running past the next
    fault counts for the fault it started after. Gaps after the last delivery do not count
    (nothing was left to deliver).
    """
    out = []
    times = sorted(deliveries)
    for i, (at, what) in enumerate(faults):
        until = faults[i + 1][0] if i + 1 < len(faults) else end
        points = [at] + [t for t in times if at < t <= until]
        later = [t for t in times if t > until]
        if later:
            points.append(later[0])
        longest = max((b - a for a, b in itertools.pairwise(points)), default=0.0)
        out.append({"at": at, "fault": what, "longest_stall_s": round(longest, 2)})
    return out


def ledger(
    args: argparse.Namespace,
    sending: Sending,
    receiver: Receiver,
    timeline: Timeline,
    by_status: dict[str, int],
    started: float,
    drained_at: float | None,
) -> dict[str, Any]:
    expected = expected_pairs(sending.accepted)
    ok: dict[tuple[str, str], list[Request]] = {}
    for r in receiver.requests:
        if r.status < 300:
            ok.setdefault((r.workflow, r.event), []).append(r)
    once = missing = after_kill = same_key_other = cross_key = 0
    examples: dict[str, list[str]] = {"missing": [], "same_key_other": [], "cross_key": []}
    for pair in sorted(expected):
        got = ok.get(pair, [])
        if not got:
            missing += 1
            examples["missing"].append(f"{pair[0]}/{pair[1]}")
        elif len(got) == 1:
            once += 1
        elif len({r.key for r in got}) > 1:
            cross_key += 1
            examples["cross_key"].append(f"{pair[0]}/{pair[1]}")
        elif all(
            any(a.at - KILL_TO_RECORD_S < k < b.at for k in timeline.worker_kills) for a, b in itertools.pairwise(got)
        ):
            after_kill += 1
        else:
            same_key_other += 1
            between = [
                f"{what} at {at - got[0].at:+.2f}s"
                for at, what in timeline.faults
                if got[0].at - 1.0 - KILL_TO_RECORD_S < at < got[-1].at
            ]
            examples["same_key_other"].append(
                f"{pair[0]}/{pair[1]} (deliveries {got[-1].at - got[0].at:.2f}s apart; faults, relative to the "
                f"first: {', '.join(between) or 'none'})"
            )
    unexpected = {p for p in ok if p not in expected}
    unaccepted = {p for p in unexpected if p[1] not in sending.accepted}
    wrongly_matched = unexpected - unaccepted
    delivery_times = [r.at for r in receiver.requests if r.status < 300]
    end = drained_at or time.time()
    stall_rows = stalls(timeline.faults, delivery_times, end) if not args.no_faults else []
    longest = max((s["longest_stall_s"] for s in stall_rows), default=0.0)
    checks = {
        "missing = 0": missing == 0,
        "no (workflow, event) under two idempotency keys": cross_key == 0,
        "no same-key duplicate without a worker kill between (storage faults)": same_key_other == 0,
        "no delivery for an event a workflow does not match": not wrongly_matched,
    }
    if not args.quick and not args.no_faults:
        checks[f"longest stall after a fault <= {STALL_LIMIT_S:g} s"] = longest <= STALL_LIMIT_S
    return {
        "config": {k: v for k, v in vars(args).items() if k != "json"},
        "sent": args.events,
        "accepted": len(sending.accepted),
        "rejected": len(sending.rejected),
        "gave_up": len(sending.gave_up),
        "send_attempts": dict(sending.attempts),
        "expected_executions": len(expected),
        "delivered_exactly_once": once,
        "duplicated_same_key_after_worker_kill": after_kill,
        "duplicated_same_key_other": same_key_other,
        "duplicated_cross_key": cross_key,
        "missing": missing,
        "delivered_unaccepted": len(unaccepted),
        "delivered_not_matching": len(wrongly_matched),
        "receiver_requests": len(receiver.requests),
        "receiver_503_first_time": sum(1 for r in receiver.requests if r.status == 503),
        "executions_by_status": by_status,
        "run_s": round((drained_at or time.time()) - started, 1),
        "drain_s": round(drained_at - sending.last_sent, 1) if drained_at else None,
        "drained": drained_at is not None,
        "timeline": [{"at": round(t - started, 2), "what": what} for t, what in timeline.entries],
        "stalls": [{**s, "at": round(s["at"] - started, 2)} for s in stall_rows],
        "longest_stall_s": longest,
        "examples": {k: v[:10] for k, v in examples.items()},
        "checks": checks,
        "ok": all(checks.values()),
    }


def print_ledger(result: dict[str, Any]) -> None:
    rows = [
        ("sent", result["sent"]),
        ("accepted (2xx)", result["accepted"]),
        ("rejected (4xx) / gave up", f"{result['rejected']} / {result['gave_up']}"),
        ("send attempts by answer", result["send_attempts"]),
        ("expected executions", result["expected_executions"]),
        ("delivered exactly once", result["delivered_exactly_once"]),
        ("duplicated, same key, worker killed between", result["duplicated_same_key_after_worker_kill"]),
        ("duplicated, same key, otherwise", result["duplicated_same_key_other"]),
        ("duplicated, different keys", result["duplicated_cross_key"]),
        ("missing", result["missing"]),
        (
            "delivered but not accepted / not matching",
            f"{result['delivered_unaccepted']} / {result['delivered_not_matching']}",
        ),
        ("receiver requests (503 first time)", f"{result['receiver_requests']} ({result['receiver_503_first_time']})"),
        ("executions by status", result["executions_by_status"]),
        ("run time s / drain time s", f"{result['run_s']} / {result['drain_s']}"),
        ("longest stall after a fault s", result["longest_stall_s"]),
    ]
    width = max(len(name) for name, _ in rows)
    print("\nledger")
    for name, value in rows:
        print(f"  {name.ljust(width)}  {value}")
    print("\nfault timeline (s from start)")
    for entry in result["timeline"]:
        print(f"  {entry['at']:8.2f}  {entry['what']}")
    if result["stalls"]:
        print("\nlongest delivery stall after each fault")
        for s in result["stalls"]:
            print(f"  {s['at']:8.2f}  {s['fault']:<45} {s['longest_stall_s']:6.2f} s")
    print("\nchecks")
    for name, passed in result["checks"].items():
        print(f"  {'ok  ' if passed else 'FAIL'}  {name}")
    for kind, ids in result["examples"].items():
        if ids:
            print(f"  {kind}: {', '.join(ids)}")


async def executions_by_status(database_url: str) -> dict[str, int]:
    conn = await db.connect(database_url)
    try:
        rows = await conn.fetch("SELECT status, count(*) AS n FROM executions GROUP BY status ORDER BY status")
    finally:
        await conn.close()
    return {r["status"]: r["n"] for r in rows}


async def run(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    rng = random.Random(args.seed)
    timeline = Timeline()
    faults = not args.no_faults
    proxy = FaultProxy(
        services.free_port(),
        0,
        random.Random(rng.randrange(2**32)),
        reset_share=args.reset_share if faults and not args.quick else 0.0,
        on_fault=timeline.fault,
    )
    receiver = Receiver(args.seed)
    receiver_server = await asyncio.start_server(receiver.handle, "127.0.0.1", 0, backlog=1024)
    receiver_url = f"http://127.0.0.1:{receiver_server.sockets[0].getsockname()[1]}"
    stack = start_stack(work, proxy.port)
    proxy.upstream_port = stack.postgres_port
    await proxy.start()
    background: list[asyncio.Task[None]] = []
    try:
        say(args, f"starting hookyard dev in {work} ...")
        await wait_ready(stack)
        endpoint_id, secret = await set_up(stack, receiver_url)
        plan = () if not faults else QUICK_PLAN if args.quick else FULL_PLAN
        gap = min(args.fault_gap, 3.0) if args.quick else args.fault_gap
        window = gap * (len(plan) + 1) if plan else 0.0
        rate = args.events / window if window else 10_000.0
        say(args, f"sending {args.events} events from {args.senders} senders; faults: {', '.join(plan) or 'none'}")
        started = time.time()
        background.append(asyncio.create_task(follow_console(stack, timeline)))
        if faults and not args.quick:
            background.append(asyncio.create_task(cut_periodically(args.cut_every, proxy, timeline, rng)))
        fault_task = asyncio.create_task(run_faults(plan, gap, stack, proxy, timeline))
        sending = await send_all(args, stack.api_port, endpoint_id, secret, rate, rng)
        say(args, f"sent: {len(sending.accepted)} accepted; waiting for deliveries ...")
        await fault_task
        for task in background[1:]:
            task.cancel()
        expected = expected_pairs(sending.accepted)
        deadline, drained_at = time.monotonic() + args.drain_timeout, None
        while time.monotonic() < deadline:
            if expected <= receiver.delivered():
                drained_at = max(r.at for r in receiver.requests if r.status < 300)
                break
            await asyncio.sleep(0.5)
        await asyncio.sleep(2.0 if args.quick else 5.0)  # late duplicates still count
        database_url = f"postgresql://postgres@127.0.0.1:{stack.postgres_port}/postgres"
        by_status = await executions_by_status(database_url)
        result = ledger(args, sending, receiver, timeline, by_status, started, drained_at)
        result["proxy"] = dict(proxy.counts)
    finally:
        for task in background:
            task.cancel()
        await proxy.close()
        receiver_server.close()
        code = await asyncio.to_thread(stop_stack, stack)
    result["dev_exit_code"] = code
    return result


def say(args: argparse.Namespace, text: str) -> None:
    print(text, file=sys.stderr if args.json else sys.stdout, flush=True)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    exit_on_sigterm()
    work = Path(tempfile.mkdtemp(prefix="hookyard-chaos-"))
    try:
        result = asyncio.run(run(args, work))
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    path = write_results("chaos", result)
    if args.json:
        print(json.dumps(result, indent=2, default=str))
    else:
        print_ledger(result)
        print(f"\nresults: {path}")
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
