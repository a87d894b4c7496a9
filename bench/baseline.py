"""The seed design, for comparison: one Temporal workflow per event, one activity per workflow.

The workflow gets the event (id and body) as input and runs one activity that POSTs it to the
target. `python -m bench.baseline --address A --task-queue Q` runs its worker until SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from temporalio import activity, workflow

with workflow.unsafe.imports_passed_through():
    import httpx

WORKFLOW_NAME = "bench.seed_event"
ACTIVITY_NAME = "bench.seed_post"


@dataclass
class SeedEvent:
    """One event: where to deliver it and what."""

    url: str
    event_id: str
    body: dict[str, Any]


@workflow.defn(name=WORKFLOW_NAME)
class SeedEventWorkflow:
    """One event, one activity."""

    @workflow.run
    async def run(self, event: SeedEvent) -> None:
        await workflow.execute_activity(
            ACTIVITY_NAME, event, start_to_close_timeout=timedelta(seconds=30), heartbeat_timeout=None
        )


class SeedActivities:
    """The delivery activity with a shared HTTP client."""

    def __init__(self, http: httpx.AsyncClient) -> None:
        self._http = http

    @activity.defn(name=ACTIVITY_NAME)
    async def post(self, event: SeedEvent) -> int:
        response = await self._http.post(event.url, json={"id": event.event_id, "event": event.body}, timeout=10)
        response.raise_for_status()
        return response.status_code


async def run_worker(address: str, task_queue: str) -> None:
    """Poll `task_queue` until SIGTERM or SIGINT."""
    from temporalio.client import Client
    from temporalio.worker import Worker

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    client = await Client.connect(address)
    limits = httpx.Limits(max_connections=200, max_keepalive_connections=50)
    async with httpx.AsyncClient(limits=limits) as http:
        worker = Worker(
            client,
            task_queue=task_queue,
            workflows=[SeedEventWorkflow],
            activities=[SeedActivities(http).post],
            graceful_shutdown_timeout=timedelta(seconds=5),
        )
        async with worker:
            print(f"baseline worker polling {task_queue}", flush=True)
            await stop.wait()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--address", required=True)
    parser.add_argument("--task-queue", required=True)
    args = parser.parse_args()
    asyncio.run(run_worker(args.address, args.task_queue))


if __name__ == "__main__":
    main()
