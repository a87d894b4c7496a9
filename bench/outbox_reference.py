"""The reference design of bench/outbox.py: a poller claiming batches of rows and one Temporal
workflow per row, whose one activity calls Novu and writes the outcome back into the row.

Kept apart from bench/outbox.py because Temporal's sandbox re-imports the module that defines
a workflow; this one imports nothing else of the repository.
`python -m bench.outbox_reference worker|poller ...` runs one of the two processes until SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
from dataclasses import dataclass
from datetime import timedelta

from temporalio import activity, workflow

with workflow.unsafe.imports_passed_through():
    import asyncpg
    import httpx
    import orjson

TASK_QUEUE = "bench-outbox-reference"
NOVU_WORKFLOW = "bench-notification"
BATCH_SIZE = 100  # the reference design's batch size


# --- children: the reference design ----------------------------------------------------------


@dataclass
class Notification:
    """One claimed row, as the poller hands it to its workflow."""

    id: int
    recipients: list[str]
    payload: str  # the row's jsonb, as text


@workflow.defn(name="bench.outbox_notification")
class NotificationWorkflow:
    """One row, one activity: trigger Novu, write the outcome back."""

    @workflow.run
    async def run(self, row: Notification) -> str:
        status: str = await workflow.execute_activity(
            "bench.outbox_send", row, start_to_close_timeout=timedelta(seconds=30)
        )
        return status


class ReferenceActivities:
    """The reference worker's activity, with a shared HTTP client and a pool on the owner's database."""

    def __init__(self, http: httpx.AsyncClient, pool: asyncpg.Pool, novu_url: str) -> None:
        self._http, self._pool, self._novu_url = http, pool, novu_url

    @activity.defn(name="bench.outbox_send")
    async def send(self, row: Notification) -> str:
        body = {
            "name": NOVU_WORKFLOW,
            "to": row.recipients,
            "payload": orjson.loads(row.payload),
            "transactionId": f"ref-{row.id}",
        }
        headers = {"authorization": "ApiKey bench", "idempotency-key": f"ref-{row.id}"}
        response = await self._http.post(f"{self._novu_url}/v1/events/trigger", json=body, headers=headers)
        ok = response.is_success
        details = response.json().get("data") if ok else {"error": response.text[:300], "code": response.status_code}
        status = "SENT" if ok else "FAILED"
        await self._pool.execute(
            "UPDATE ent_notification SET notification_status = $2, error_details = $3::jsonb, updated_at = now() "
            "WHERE id = $1",
            row.id,
            status,
            json.dumps(details),
        )
        return status


def _stop_on_signals() -> asyncio.Event:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    return stop


async def reference_worker(address: str, owner_url: str, novu_url: str) -> None:
    """The reference design's Temporal worker (SDK defaults), until SIGTERM."""
    from temporalio.client import Client
    from temporalio.worker import Worker

    stop = _stop_on_signals()
    client = await Client.connect(address)
    pool = await asyncpg.create_pool(owner_url, min_size=1, max_size=10)
    limits = httpx.Limits(max_connections=200, max_keepalive_connections=50)
    try:
        async with httpx.AsyncClient(limits=limits, timeout=10) as http:
            worker = Worker(
                client,
                task_queue=TASK_QUEUE,
                workflows=[NotificationWorkflow],
                activities=[ReferenceActivities(http, pool, novu_url).send],
                graceful_shutdown_timeout=timedelta(seconds=5),
            )
            async with worker:
                print(f"reference worker polling {TASK_QUEUE}", flush=True)
                await stop.wait()
    finally:
        await pool.close()


# Claim one batch in one statement: two pollers never take the same row.
CLAIM = """
UPDATE ent_notification SET notification_status = 'PROCESSING', updated_at = now()
WHERE id IN (
    SELECT id FROM ent_notification
    WHERE notification_status = 'PENDING' AND publish_status = 'PUBLISH'
      AND (scheduled_send_time IS NULL OR scheduled_send_time <= now())
    ORDER BY id LIMIT $1
    FOR UPDATE SKIP LOCKED)
RETURNING id, recipients, payload::text AS payload
"""


async def reference_poller(address: str, owner_url: str, interval: float, drain: bool) -> None:
    """The reference design's new-row loop: claim up to 100 rows, start one workflow per row."""
    from temporalio.client import Client
    from temporalio.common import WorkflowIDReusePolicy

    stop = _stop_on_signals()
    client = await Client.connect(address)
    conn = await asyncpg.connect(owner_url)
    print("reference poller running", flush=True)
    try:
        while not stop.is_set():
            rows = await conn.fetch(CLAIM, BATCH_SIZE)
            await asyncio.gather(
                *(
                    client.start_workflow(
                        NotificationWorkflow.run,
                        Notification(row["id"], list(row["recipients"]), row["payload"]),
                        id=f"ent-notification-{row['id']}",
                        task_queue=TASK_QUEUE,
                        id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
                    )
                    for row in rows
                )
            )
            if drain and len(rows) == BATCH_SIZE:
                continue
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), interval)
    finally:
        await conn.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("process", choices=["worker", "poller"])
    parser.add_argument("--address", required=True, help="the Temporal server")
    parser.add_argument("--owner-url", required=True, help="the owner's database")
    parser.add_argument("--novu-url", help="worker: the Novu API (stand-in)")
    parser.add_argument("--interval", type=float, default=10.0, help="poller: seconds between polls")
    parser.add_argument("--one-batch", action="store_true", help="poller: one batch per interval, not until drained")
    args = parser.parse_args()
    if args.process == "worker":
        if not args.novu_url:
            parser.error("the worker needs --novu-url")
        asyncio.run(reference_worker(args.address, args.owner_url, args.novu_url))
    else:
        asyncio.run(reference_poller(args.address, args.owner_url, args.interval, not args.one_batch))


if __name__ == "__main__":
    main()
