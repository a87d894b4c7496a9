"""CPU per request of the actions' HTTP client, against the local receiver (bench/receiver.py).

Each client sends `--requests` JSON POSTs, `--concurrency` at a time, to one keep-alive
origin (as a batch of http.request executions does); this process's CPU time (user + system)
per request is reported for each, in interleaved rounds so a shared machine disturbs them
alike. Clients:
  - guarded: the actions' client (`actions.egress.guarded_client` with the worker's limits);
  - httpx-plain: httpx.AsyncClient with its default transport and the same limits (no guard);
  - aiohttp: aiohttp.ClientSession over a TCPConnector of the same size (no guard), when installed.

Run: `python -m bench.http_client_cpu [--requests 2000] [--concurrency 100] [--rounds 3]`.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Coroutine
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a file: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx
import orjson

from actions.egress import EgressPolicy, guarded_client
from bench.common import Processes, python_module, wait_http
from hookyard import services
from settings.egress import parse_allow

Send = Callable[[str, bytes], Awaitable[int]]


async def _drive(send: Send, url: str, requests: int, concurrency: int) -> float:
    """CPU µs per request for `requests` POSTs, `concurrency` at a time."""
    bodies = iter(orjson.dumps({"id": f"h-{n}"}) for n in range(requests))

    async def lane() -> None:
        for body in bodies:
            status = await send(url, body)
            assert status == 200, status

    cpu = time.process_time()
    await asyncio.gather(*(lane() for _ in range(concurrency)))
    return (time.process_time() - cpu) / requests * 1e6


async def _httpx(client: httpx.AsyncClient, url: str, requests: int, concurrency: int) -> float:
    async def send(url: str, body: bytes) -> int:
        response = await client.post(url, content=body, headers={"content-type": "application/json"}, timeout=10.0)
        return response.status_code

    await _drive(send, url, concurrency * 2, concurrency)  # warm the pool
    return await _drive(send, url, requests, concurrency)


async def measure_guarded(url: str, port: int, requests: int, concurrency: int, limits: httpx.Limits) -> float:
    async with guarded_client(EgressPolicy(parse_allow(f"127.0.0.1:{port}")), limits=limits) as client:
        return await _httpx(client, url, requests, concurrency)


async def measure_plain(url: str, port: int, requests: int, concurrency: int, limits: httpx.Limits) -> float:
    async with httpx.AsyncClient(limits=limits, trust_env=False) as client:
        return await _httpx(client, url, requests, concurrency)


async def measure_aiohttp(url: str, port: int, requests: int, concurrency: int, limits: httpx.Limits) -> float:
    import aiohttp  # optional: only for this comparison

    connector = aiohttp.TCPConnector(limit=limits.max_connections or 100)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def send(url: str, body: bytes) -> int:
            async with session.post(url, data=body, headers={"content-type": "application/json"}) as response:
                await response.read()
                return response.status

        await _drive(send, url, concurrency * 2, concurrency)
        return await _drive(send, url, requests, concurrency)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="hookyard-bench-http-"))
    procs = Processes(work / "logs")
    try:
        port = services.free_port()
        url = f"http://127.0.0.1:{port}"
        wait_http(f"{url}/stats", procs.spawn("receiver", python_module("bench.receiver", "--port", str(port))))
        limits = httpx.Limits(max_connections=200, max_keepalive_connections=50)
        tuned = httpx.Limits(max_connections=200, max_keepalive_connections=200)
        clients: dict[str, Callable[[], Coroutine[Any, Any, float]]] = {
            "guarded (worker limits 200/50)": lambda: measure_guarded(
                f"{url}/r", port, args.requests, args.concurrency, limits
            ),
            "guarded (keep-alive 200/200)": lambda: measure_guarded(
                f"{url}/r", port, args.requests, args.concurrency, tuned
            ),
            "httpx-plain (200/200)": lambda: measure_plain(f"{url}/r", port, args.requests, args.concurrency, tuned),
        }
        try:
            import aiohttp  # noqa: F401

            clients["aiohttp (limit 200)"] = lambda: measure_aiohttp(
                f"{url}/r", port, args.requests, args.concurrency, tuned
            )
        except ImportError:
            print("aiohttp is not installed: not compared")
        figures: dict[str, list[float]] = {name: [] for name in clients}
        for _ in range(args.rounds):
            for name, run in clients.items():
                figures[name].append(asyncio.run(run()))
        print(f"CPU µs per request ({args.requests} POSTs, {args.concurrency} at a time, median of {args.rounds}):")
        for name, values in figures.items():
            print(f"  {name:32s} {statistics.median(values):8,.0f}   ({', '.join(f'{v:,.0f}' for v in values)})")
        return 0
    finally:
        procs.close()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
