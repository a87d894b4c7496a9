"""Shared pieces of the benchmarks: child processes, fixtures, signed bodies, reporting."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import platform
import resource
import signal
import statistics
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from uuid import UUID

import httpx

from hookyard import services
from ingest.signatures import SCHEMES
from oauth.crypto import Keyring, generate_key
from schemas import db
from schemas.store.endpoints import create_endpoint
from schemas.store.owners import create_owner
from schemas.store.workflows import insert_workflow

ROOT = Path(__file__).resolve().parent.parent
RESULTS_DIR = ROOT / "bench" / "results"
SIGNER = SCHEMES["standard-webhooks"]


class Processes:
    """Every child process a benchmark starts; `close()` stops them newest first."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.procs: list[services.ManagedProcess] = []

    def add(self, proc: services.ManagedProcess) -> services.ManagedProcess:
        """Track a process started elsewhere (e.g. by `hookyard.services`)."""
        self.procs.append(proc)
        return proc

    def add_service(self, proc: services.ManagedProcess, url: str) -> str:
        """Track a server from `hookyard.services.start_*`; returns its URL."""
        self.add(proc)
        return url

    def spawn(self, name: str, argv: Sequence[str], env: dict[str, str] | None = None) -> services.ManagedProcess:
        """Start `argv` in its own process group, output to `<log_dir>/<name>.log`."""
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log_path = self.log_dir / f"{name}.log"
        with log_path.open("ab") as log:
            proc = subprocess.Popen(
                list(argv),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                cwd=ROOT,
                env={**os.environ, **(env or {})},
            )
        return self.add(services.ManagedProcess(name, proc, log_path))

    def stop(self, proc: services.ManagedProcess, timeout: float = 15.0) -> None:
        """Stop one process (and its group) now."""
        proc.stop(timeout)
        if proc in self.procs:
            self.procs.remove(proc)

    def cpu_seconds(self) -> dict[str, float]:
        """CPU time (user + system) used so far by each tracked process tree, this process and the host.

        Trees include children (PostgreSQL backends start their own sessions, so process
        groups would miss them); a process that already exited is not counted.
        """
        tick = os.sysconf("SC_CLK_TCK")
        parent: dict[int, int] = {}
        cpu: dict[int, float] = {}
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            pid = int(stat.parent.name)
            parent[pid] = int(fields[1])
            cpu[pid] = (int(fields[11]) + int(fields[12])) / tick  # utime + stime
        used = {}
        for proc in self.procs:
            tree = {proc.process.pid}
            for pid in sorted(parent):  # children have higher pids, except after pid wrap-around
                if parent[pid] in tree:
                    tree.add(pid)
            used[proc.name] = sum(cpu.get(pid, 0.0) for pid in tree)
        me, waited = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
        used["(client)"] = me.ru_utime + me.ru_stime + waited.ru_utime + waited.ru_stime  # this process, wrk
        host = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
        used["(host busy)"] = (sum(map(int, host)) - int(host[3]) - int(host[4])) / tick  # minus idle, iowait
        return used

    def close(self) -> None:
        """Stop everything still running, newest first."""
        while self.procs:
            proc = self.procs.pop()
            try:
                proc.stop(timeout=20)
            except Exception as exc:  # keep stopping the others
                print(f"warning: could not stop {proc.name}: {exc}", file=sys.stderr)


def exit_on_sigterm() -> None:
    """Turn SIGTERM into SystemExit so `finally` blocks stop the child processes."""

    def handler(signum: int, frame: object) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, handler)


def python_module(module: str, *args: str) -> list[str]:
    """argv running a module of this repository with this interpreter."""
    return [sys.executable, "-m", module, *args]


def hookyard_argv(command: str) -> list[str]:
    """argv of a `hookyard` subcommand (the console script of this environment)."""
    return [services.bin_path("hookyard"), command]


def wait_http(url: str, proc: services.ManagedProcess, timeout: float = 60.0) -> None:
    """Block until GET `url` answers 200, or fail with the process log's tail."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not proc.alive():
            raise RuntimeError(f"{proc.name} exited; see {proc.log_path}:\n{tail(proc.log_path)}")
        try:
            if httpx.get(url, timeout=1.0).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{proc.name} not ready at {url} after {timeout}s; see {proc.log_path}")


def tail(path: Path, lines: int = 30) -> str:
    """The last lines of a log file."""
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def master_key() -> tuple[str, bytes, str]:
    """(key id, key, HOOKYARD_MASTER_KEYS value) for a fresh master key."""
    key = generate_key()
    return "bench", key, f"bench:{base64.b64encode(key).decode()}"


def new_secret() -> str:
    """A Standard Webhooks secret."""
    return "whsec_" + base64.b64encode(os.urandom(32)).decode()


@dataclass(frozen=True)
class Route:
    """One endpoint (and, when there is a receiver, the workflow listening on it)."""

    endpoint_id: UUID
    secret: str
    workflow_id: UUID | None


async def create_routes(
    database_url: str, keyring: Keyring, count: int, action_url: str | None, concurrency_limit: int = 10
) -> tuple[UUID, list[Route]]:
    """An owner with `count` endpoints; each gets an http.request workflow if `action_url` is set.

    The action posts `{"id": <trigger body id>}` so the receiver can match deliveries to sends.
    """
    conn = await db.connect(database_url)
    try:
        owner_id, _ = await create_owner(conn, "bench")
        routes = []
        for i in range(count):
            secret = new_secret()
            ep = await create_endpoint(conn, keyring, owner_id, f"bench-{i}", "standard-webhooks", secret)
            wf_id = None
            if action_url:
                values = {
                    "name": f"bench-{i}",
                    "trigger_type": "webhook.received",
                    "trigger_config": {"endpoint_id": str(ep.id)},
                    "routing_key": str(ep.id),
                    "action_type": "http.request",
                    "action_config": {"url": action_url, "body": {"id": "{{ trigger.body.id }}"}},
                    "credential_id": None,
                    "active": True,
                    "concurrency_limit": concurrency_limit,
                    "retry_policy": {},
                }
                wf_id = (await insert_workflow(conn, owner_id, values)).id
            routes.append(Route(ep.id, secret, wf_id))
        return owner_id, routes
    finally:
        await conn.close()


def event_body(event_id: str, n: int) -> bytes:
    """A ~150-byte JSON webhook body, like a typical order event."""
    doc = {"type": "order.created", "id": event_id, "data": {"order": n, "amount": 4200, "currency": "EUR"}}
    return json.dumps(doc, separators=(",", ":")).encode()


def signed_headers(body: bytes, secret: str, msg_id: str) -> dict[str, str]:
    """Standard Webhooks headers for `body`, signed now."""
    headers = SIGNER.sign(body, secret, now=time.time(), msg_id=msg_id)
    headers["content-type"] = "application/json"
    return headers


def cpu_share(before: dict[str, float], after: dict[str, float], seconds: float) -> dict[str, float]:
    """CPU used between two `cpu_seconds()` snapshots, in cores (1.0 = one core busy).

    "(other)" is what the host spent outside the benchmark's processes: other workloads on a
    shared machine, or kernel work; when it is large the run was disturbed.
    """
    share = {name: round((after[name] - before.get(name, 0.0)) / seconds, 2) for name in after}
    ours = sum(v for k, v in share.items() if k != "(host busy)")
    share["(other)"] = round(max(0.0, share["(host busy)"] - ours), 2)
    return share


DISTURBED_CORES = 0.4


def disturbance_note(shares: Iterable[dict[str, float]]) -> str | None:
    """A warning when other work used the machine during a measurement, else None."""
    worst = max((share.get("(other)", 0.0) for share in shares), default=0.0)
    if worst <= DISTURBED_CORES:
        return None
    return f"warning: other work used up to {worst:.2f} cores during the run; figures are disturbed, run again"


async def wait_until(check: Callable[[], Awaitable[bool]], timeout: float, interval: float = 0.1) -> float:
    """Poll the async `check()` until it is true; returns time.monotonic() at that moment."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await check():
            return time.monotonic()
        await asyncio.sleep(interval)
    raise TimeoutError(f"not done after {timeout:.0f}s")


def http_post(path: str, body: bytes, headers: dict[str, str]) -> bytes:
    """A complete HTTP/1.1 keep-alive POST, encoded once so sending costs the client nothing."""
    lines = [f"POST {path} HTTP/1.1", "host: 127.0.0.1", f"content-length: {len(body)}"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


async def read_status(reader: asyncio.StreamReader, timeout: float = 30.0) -> tuple[int, bytes]:
    """Read one HTTP/1.1 response with a content-length (what uvicorn sends); (status, body)."""
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout)
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    body = await asyncio.wait_for(reader.readexactly(length), timeout) if length else b""
    return int(head[9:12]), body


async def post_all(port: int, requests: Sequence[bytes], concurrency: int) -> dict[str, int]:
    """Send pre-encoded requests to 127.0.0.1:port over `concurrency` keep-alive connections.

    A minimal client on purpose: httpx tops out at a few hundred requests/s on this machine,
    which would measure the client, not the server.
    """
    pending = iter(requests)
    statuses: Counter[str] = Counter()

    async def connection() -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            for request in pending:
                writer.write(request)
                status, _ = await read_status(reader)
                statuses[str(status)] += 1
        finally:
            writer.close()

    await asyncio.gather(*(connection() for _ in range(concurrency)))
    return dict(statuses)


def signed_requests(routes: Sequence[Route], ids: Sequence[str]) -> list[bytes]:
    """One signed webhook per id (round robin over the routes), encoded for `post_all`."""
    requests = []
    for n, event_id in enumerate(ids):
        route = routes[n % len(routes)]
        body = event_body(event_id, n)
        headers = signed_headers(body, route.secret, f"msg_{event_id}")
        requests.append(http_post(f"/hooks/{route.endpoint_id}", body, headers))
    return requests


def percentile(values: Sequence[float], pct: float) -> float:
    """Nearest-rank style percentile (statistics.quantiles with inclusive method)."""
    if not values:
        return float("nan")
    if len(values) == 1:
        return float(values[0])
    return statistics.quantiles(values, n=100, method="inclusive")[max(0, min(98, round(pct) - 1))]


def print_table(headers: Sequence[str], rows: Iterable[Sequence[object]]) -> None:
    """A compact fixed-width table."""
    cells = [[str(h) for h in headers]] + [[_fmt(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    for n, row in enumerate(cells):
        print("  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths, strict=True))))
        if n == 0:
            print("  ".join("-" * w for w in widths))


def _fmt(value: object) -> str:
    if isinstance(value, float):
        return f"{value:,.1f}" if abs(value) >= 10 else f"{value:.2f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def write_results(name: str, data: dict[str, Any]) -> Path:
    """Write `data` (plus machine facts) to bench/results/<name>-<utc time>.json and <name>-latest.json."""
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    doc = {
        "benchmark": name,
        "utc": stamp,
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()},
        **data,
    }
    text = json.dumps(doc, indent=2, default=str)
    path = RESULTS_DIR / f"{name}-{stamp}.json"
    path.write_text(text)
    (RESULTS_DIR / f"{name}-latest.json").write_text(text)
    return path
