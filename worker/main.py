"""The worker process: runs automation workflows and their activities."""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta
from functools import partial

import httpx
import redis.asyncio as redis
from temporalio.client import Client
from temporalio.worker import Worker

from actions.egress import EgressPolicy, guarded_client
from actions.ratelimit import RedisRateLimiter, rates_with_overrides
from oauth.crypto import Keyring
from oauth.google import google_from_settings
from oauth.vault import Vault
from runtime.temporal import connect_with_retry
from schemas import db
from settings import Settings
from telemetry.metrics import Metrics, record_credential_refresh_failure
from telemetry.tracing import NOOP, Tracing
from worker.automation.activities import AutomationActivities
from worker.automation.handoff import hand_offs
from worker.automation.lane import LaneWorkflow
from worker.automation.workflow import AutomationWorkflow
from worker.gmail.activities import GmailActivities
from worker.gmail.workflow import MailboxWorkflow
from worker.newsletter.activities import NewsletterActivities
from worker.newsletter.workflow import NewsletterWorkflow
from worker.schedule_cron.activities import TickActivities
from worker.schedule_cron.workflow import TickWorkflow

log = logging.getLogger(__name__)

HEARTBEAT_THROTTLE = timedelta(seconds=2)
STICKY_TIMEOUT = timedelta(seconds=2)


def build_worker(
    client: Client,
    settings: Settings,
    activities: AutomationActivities,
    ticks: TickActivities | None = None,
    gmail: GmailActivities | None = None,
    newsletter: NewsletterActivities | None = None,
) -> Worker:
    """The Temporal worker for hookyard's task queue (with `ticks`, also schedule ticks; with
    `gmail`, also the Gmail mailbox workflows; with `newsletter`, also newsletter sends)."""
    return Worker(
        client,
        task_queue=settings.task_queue,
        workflows=[
            LaneWorkflow,
            # Still registered for one release: automations started before lanes drain what they
            # hold and complete when idle (docs/architecture.md, "Execution lanes").
            AutomationWorkflow,
            *([TickWorkflow] if ticks else []),
            *([MailboxWorkflow] if gmail else []),
            *([NewsletterWorkflow] if newsletter else []),
        ],
        activities=[
            activities.run_batch,
            *([ticks.record_tick] if ticks else []),
            *([gmail.reconcile_watch, gmail.sync] if gmail else []),
            *([newsletter.send_batch] if newsletter else []),
        ],
        max_concurrent_activities=settings.worker_max_concurrent_activities,
        # The SDK sends heartbeats at most every 0.8 x the heartbeat timeout; every 2 s instead
        # leaves 3 s of slack under a 5 s timeout, so a busy worker is not declared lost.
        max_heartbeat_throttle_interval=HEARTBEAT_THROTTLE,
        # A workflow whose worker died moves to another after this long, not after 10 s.
        sticky_queue_schedule_to_start_timeout=STICKY_TIMEOUT,
        # Running activities get this long to finish on shutdown before being cancelled.
        graceful_shutdown_timeout=timedelta(seconds=settings.worker_graceful_shutdown_s),
    )


async def run_worker(
    settings: Settings,
    keyring: Keyring,
    stop: asyncio.Event,
    metrics: Metrics | None = None,
    tracing: Tracing = NOOP,
) -> None:
    """Run until `stop` is set, then shut down gracefully; reconnect if Temporal goes away."""
    # Started before PostgreSQL (or while it restarts): wait for it rather than exit.
    pool = await db.wait_for_pool(settings.database_url, stop, min_size=1, max_size=settings.db_pool_max)
    if pool is None:
        return
    limits = httpx.Limits(max_connections=200, max_keepalive_connections=50)
    # Every outbound request (actions, token refreshes, Gmail) connects only where the egress
    # policy allows, to the address it checked; redirects are never followed.
    egress = EgressPolicy(settings.egress_allow, settings.egress_deny)
    # Provider rate limits shared with every other worker; short timeouts, as a Redis outage
    # only turns limiting off (actions/ratelimit.py).
    redis_client = redis.from_url(settings.redis_url, socket_connect_timeout=1.0, socket_timeout=1.0)
    limiter = RedisRateLimiter(redis_client, rates_with_overrides(settings.rate_limits))
    try:
        async with guarded_client(egress, limits=limits) as http:
            vault = Vault(
                pool,
                keyring,
                http,
                google_from_settings(settings.for_google()),
                on_refresh_failure=partial(record_credential_refresh_failure, metrics),
                connect_link_ttl_s=settings.connect_link_ttl_s,
            )
            newsletter = NewsletterActivities(
                pool,
                http,
                vault,
                limiter,
                metrics,
                history_limit=settings.automation_history_limit,
                max_rendered_bytes=settings.max_rendered_bytes,
            )
            activities = AutomationActivities(
                pool,
                http,
                keyring,
                vault,
                limiter=limiter,
                metrics=metrics,
                tracing=tracing,
                handoffs=hand_offs([newsletter]),
                api_bases={"gmail": settings.gmail_api_base},
                max_rendered_bytes=settings.max_rendered_bytes,
                egress=egress,
            )
            ticks = TickActivities(pool)
            gmail = GmailActivities(pool, http, vault, settings)
            while not stop.is_set():
                client = await connect_with_retry(settings, stop)
                if client is None:
                    break
                # Traced workflows and activities come with the client's interceptor.
                client = tracing.instrument_client(client)
                worker = build_worker(client, settings, activities, ticks, gmail, newsletter)
                await _run_until_stopped(worker, stop)
    finally:
        await pool.close()
        await redis_client.aclose()


async def _run_until_stopped(worker: Worker, stop: asyncio.Event) -> None:
    run = asyncio.create_task(worker.run())
    stopping = asyncio.create_task(stop.wait())
    log.info("worker polling task queue %r", worker.task_queue)
    await asyncio.wait([run, stopping], return_when=asyncio.FIRST_COMPLETED)
    stopping.cancel()
    if run.done():
        # A fatal poll error (e.g. the server vanished for long): start over with a new client.
        log.warning("worker stopped unexpectedly (%r); restarting", run.exception())
        await asyncio.sleep(1)
        return
    log.info(
        "worker stopping; running activities get %.0fs to finish",
        worker.config()["graceful_shutdown_timeout"].total_seconds(),
    )
    await worker.shutdown()
    await run
