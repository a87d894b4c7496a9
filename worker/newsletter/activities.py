"""The newsletter's activities: the hand-over and the batch activity.

The automation's batch activity hands a newsletter over (`NewsletterActivities.hand_off`):
it stores the config snapshot and the recipient list (idempotently), starts the newsletter
workflow (workflow.py) and reports the execution as handed off; the execution stays `running`.
Each batch activity first checks whether the owner cancelled (`executions.cancel_requested_at`,
set by the API: no Temporal client needed there), sends with the configured concurrency,
records every recipient's outcome the moment it is known and heartbeats per recipient. The
batch that finds nothing left (or a cancel) writes the execution's final status and result.

Temporal history carries the execution id and numbers only; addresses, templates and
secrets stay in PostgreSQL. A lost worker's batch is retried after the heartbeat timeout and
skips every recipient already recorded (actions/newsletter.py: why nobody gets two e-mails).
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any
from uuid import UUID

import asyncpg
import httpx
from temporalio import activity
from temporalio.common import WorkflowIDReusePolicy
from temporalio.exceptions import ApplicationError, WorkflowAlreadyStartedError

from actions import newsletter
from actions.base import RateLimiter
from actions.email import EmailRoute
from actions.errors import PermanentActionError
from actions.templating import DEFAULT_MAX_RENDERED_BYTES
from oauth.vault import Vault
from schemas import db
from schemas.sanitize import strip_nul
from schemas.store import newsletter as store
from telemetry.metrics import Metrics, record_failover
from worker.automation.credentials import OwnerCredentials
from worker.newsletter.contract import (
    NEWSLETTER_WORKFLOW,
    SEND_BATCH_ACTIVITY,
    BatchProgress,
    NewsletterJob,
    newsletter_id,
)


@dataclass(frozen=True)
class _Batch:
    """What every recipient of one batch is sent with."""

    execution_id: UUID
    config: dict[str, Any]
    context: dict[str, Any]
    routes: list[EmailRoute]
    credentials: newsletter.CachedCredentials
    pacing: newsletter.Pacing


class NewsletterActivities:
    """The hand-over (called from the automation's batch activity) and the batch activity."""

    # The action this capability takes over from the automation (its `own_workflow`).
    action = newsletter.NAME

    def __init__(
        self,
        pool: asyncpg.Pool,
        http: httpx.AsyncClient,
        vault: Vault,
        limiter: RateLimiter | None = None,
        metrics: Metrics | None = None,
        history_limit: int = 8000,
        max_rendered_bytes: int = DEFAULT_MAX_RENDERED_BYTES,
    ) -> None:
        self._pool = pool
        self._max_rendered_bytes = max_rendered_bytes
        self._http = http
        self._vault = vault
        self._limiter = limiter
        self._metrics = metrics
        self._history_limit = history_limit

    async def hand_off(self, row: asyncpg.Record) -> dict[str, Any]:
        """Store the newsletter and start its workflow; the execution's result meanwhile.

        Runs inside the automation's batch activity, with a claimed execution row (see
        `schemas.store.executions.claim_for_run`). Safe to repeat: the rows are stored once and
        the workflow id admits one run (a failed or terminated one may be started again).
        Raises PermanentActionError for a config that cannot be sent (no recipients, bad send_at).
        """
        execution_id: UUID = row["id"]
        config: dict[str, Any] = dict(row["action_config"])
        credential_id = None if row["credential_id"] is None else str(row["credential_id"])
        newsletter.routes(config, credential_id)  # fails now, not at send time, if there is none
        context = newsletter.template_context(
            execution_id, row["attempts"], row["trigger_data"], row["workflow_id"], row["workflow_name"]
        )
        send_at = newsletter.send_at(config, context, datetime.now(UTC))
        listed, duplicates = newsletter.recipients(config, row["trigger_data"])
        # Inline recipients are stored as rows; batches need not read them from the snapshot.
        snapshot = {name: value for name, value in config.items() if name != "recipients"}
        async with self._pool.acquire() as conn:
            status = await store.create(conn, execution_id, snapshot, row["credential_id"], send_at, listed, duplicates)
        if status != "running":
            return {"status": status or "gone"}  # cancelled meanwhile: nothing to start
        info = activity.info()
        job = NewsletterJob(
            execution_id=str(execution_id),
            send_at=None if send_at is None else send_at.timestamp(),
            pause_s=newsletter.pacing(config).pause_s,
            heartbeat_timeout_s=info.heartbeat_timeout.total_seconds() if info.heartbeat_timeout else 30.0,
            history_limit=self._history_limit,
        )
        workflow_id = newsletter_id(str(execution_id))
        run_id: str | None = None
        try:
            handle = await activity.client().start_workflow(
                NEWSLETTER_WORKFLOW,
                job,
                id=workflow_id,
                task_queue=info.task_queue,
                id_reuse_policy=WorkflowIDReusePolicy.ALLOW_DUPLICATE_FAILED_ONLY,
            )
            run_id = handle.first_execution_run_id
        except WorkflowAlreadyStartedError:
            pass  # a repeated hand-over: the first one's workflow sends
        async with self._pool.acquire() as conn:
            await store.set_temporal_ids(conn, execution_id, workflow_id, run_id)
        return {
            "status": "sending" if send_at is None else "scheduled",
            "total": len(listed),
            "duplicates_skipped": duplicates,
            "send_at": None if send_at is None else send_at.isoformat().replace("+00:00", "Z"),
        }

    @activity.defn(name=SEND_BATCH_ACTIVITY)
    async def send_batch(self, execution_id: str) -> BatchProgress:
        """Send to the next batch of open recipients, or finish the newsletter if none is left."""
        beat = asyncio.create_task(_heartbeat(activity.info().heartbeat_timeout))
        try:
            return await self._send_batch(UUID(execution_id))
        finally:
            beat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await beat

    async def _send_batch(self, execution_id: UUID) -> BatchProgress:
        async with self._pool.acquire() as conn:
            job = await store.load(conn, execution_id)
            if job is None:
                raise ApplicationError("no newsletter is stored for this execution", non_retryable=True)
            config: dict[str, Any] = job["config"]
            pacing = newsletter.pacing(config)
            decision, rows = await store.claim_batch(conn, execution_id, pacing.batch_size)
            if decision == "finished":
                return BatchProgress(done=True, status="finished")
            if decision == "cancel" or not rows:
                return _done(await newsletter.finalise(conn, execution_id, cancel=decision == "cancel"))
        try:
            route_list = newsletter.routes(config, None if job["credential_id"] is None else str(job["credential_id"]))
        except PermanentActionError as exc:
            route_list, no_route = [], str(exc)
        else:
            no_route = ""
        batch = _Batch(
            execution_id=execution_id,
            config=config,
            context=newsletter.template_context(
                execution_id, job["attempts"], job["trigger_data"], job["workflow_id"], job["workflow_name"]
            ),
            routes=route_list,
            credentials=newsletter.CachedCredentials(OwnerCredentials(self._vault, job["owner_id"])),
            pacing=pacing,
        )
        slots = asyncio.Semaphore(pacing.concurrency)
        # A task group, not gather: if recording an outcome fails (database down), the other
        # sends stop before the activity fails, so its retry never overlaps them.
        async with asyncio.TaskGroup() as group:
            tasks = [group.create_task(self._recipient(batch, slots, row, no_route)) for row in rows]
        states = [task.result() for task in tasks]
        async with self._pool.acquire() as conn:
            remaining = await store.open_count(conn, execution_id)
            if remaining == 0:
                return _done(await newsletter.finalise(conn, execution_id, cancel=False))
        sent = states.count("sent")
        return BatchProgress(done=False, sent=sent, failed=len(states) - sent, remaining=remaining)

    async def _recipient(self, batch: _Batch, slots: asyncio.Semaphore, row: asyncpg.Record, no_route: str) -> str:
        async with slots:
            outcome = await self._outcome(batch, row, no_route)
            async with self._pool.acquire() as conn:
                await store.record(
                    conn,
                    batch.execution_id,
                    row["idx"],
                    outcome.state,
                    outcome.provider,
                    strip_nul(outcome.message_id),
                    strip_nul(outcome.error),
                )
        activity.heartbeat()
        return outcome.state

    async def _outcome(self, batch: _Batch, row: asyncpg.Record, no_route: str) -> newsletter.RecipientOutcome:
        index: int = row["idx"]
        if row["state"] == "sending":
            # Only requests to providers without idempotency keys are marked beforehand.
            provider = row["provider"] or "the provider"
            return newsletter.RecipientOutcome(
                "unknown", row["provider"], None, newsletter.LEFT_SENDING.format(provider=provider)
            )
        if no_route:
            return newsletter.RecipientOutcome("failed", None, None, no_route)
        try:
            message = newsletter.message_for(
                batch.config, batch.context, index, row["address"], row["vars"], self._max_rendered_bytes
            )
        except PermanentActionError as exc:
            return newsletter.RecipientOutcome("failed", None, None, str(exc))
        unsafe: list[str] = []

        async def before_unsafe(provider: str) -> None:
            unsafe.append(provider)
            async with self._pool.acquire() as conn:
                await store.mark_sending(conn, batch.execution_id, index, provider)

        try:
            return await newsletter.deliver(
                self._http,
                batch.credentials,
                batch.routes,
                message,
                idempotency_key=f"{batch.execution_id}:{index}",
                limiter=self._limiter,
                timeout_s=batch.pacing.timeout_s,
                max_attempts=batch.pacing.max_attempts,
                before_unsafe_request=before_unsafe,
                on_failover=partial(record_failover, self._metrics),
            )
        except (*db.STORAGE_ERRORS, asyncpg.PostgresError):
            raise  # storage trouble: the batch is retried, and nothing was sent unrecorded
        except Exception as exc:  # a bug or an unexpected library error: this recipient only
            activity.logger.exception("newsletter %s recipient %d: unexpected error", batch.execution_id, index)
            reason = f"unexpected error ({type(exc).__name__})"
            if unsafe:
                return newsletter.RecipientOutcome("unknown", unsafe[-1], None, reason)
            return newsletter.RecipientOutcome("failed", None, None, reason)


def _done(summary: newsletter.Summary | None) -> BatchProgress:
    if summary is None:  # finished elsewhere meanwhile (cancelled before it started)
        return BatchProgress(done=True, status="finished")
    result = summary.result
    return BatchProgress(done=True, status=summary.status, sent=result["sent"], failed=result["failed"])


async def _heartbeat(heartbeat_timeout: timedelta | None) -> None:
    """Heartbeat while a batch waits (rate limits, retries), well inside the timeout."""
    interval = max(0.5, heartbeat_timeout.total_seconds() / 3) if heartbeat_timeout else 10.0
    while True:
        activity.heartbeat()
        await asyncio.sleep(interval)
