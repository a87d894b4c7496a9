"""The reconciler: nothing handed to Temporal is stranded there.

Runs inside the dispatcher process as its own task. Every `reconcile_interval_s` it looks at
what Temporal was given more than `reconcile_grace_s` ago and is still open in PostgreSQL:

- executions of a lane (`lane-<task queue>-<n>`, docs/architecture.md "Execution lanes") or, handed over
  before lanes (or with lanes off), of a user workflow's own automation
  (`automation-<workflow id>`): it asks Temporal (one describe per lane or automation)
  whether the workflow runs. If it does not (terminated, failed, timed out,
  reset away, never started), every open execution that no attempt can still be running for
  is handed back: queued ones at once, ones waiting for a retry once the retry is due, ones
  whose attempt was claimed (and never recorded) once the batch activity's start-to-close has
  passed. If it runs, only overdue executions are handed back: a retry due more than the
  grace ago, an attempt or a queued execution older than the start-to-close.
- executions handed to a newsletter workflow (`newsletter-<execution id>`) whose workflow is
  gone without finishing: the newsletter workflow is started again (its recipients' recorded
  states make that safe: it sends only to those still open).
- active Gmail mailboxes whose workflow (`gmail-mailbox-<credential id>`) is not running:
  started again with a reconcile signal (it then renews its watch and syncs).

Handing back clears `signalled_at`, so the dispatcher's hand-over signals the execution again
(marked re-driven if it ran before). That is exactly-once safe: the automation ignores ids it
has pending, in flight or waiting for a retry, `claim_for_run` skips finished executions and
attempts that another run of the automation claimed and may still be running.

Safe in any number of replicas: each Temporal workflow checked is leased in
`reconcile_leases` (SKIP LOCKED); the lease also spaces the checks of one workflow.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from contextlib import suppress
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID

import asyncpg
from temporalio.client import Client
from temporalio.common import WorkflowIDReusePolicy
from temporalio.exceptions import WorkflowAlreadyStartedError
from temporalio.service import RPCError, RPCStatusCode

from actions.newsletter import pacing
from schemas import db
from schemas.store import reconcile as store
from schemas.store.executions import ATTEMPT_IN_FLIGHT_S
from schemas.store.gmail import MailboxRef
from schemas.store.newsletter import set_temporal_ids
from settings import Settings
from telemetry.metrics import Metrics
from worker.automation.contract import automation_id, lane_id, lane_prefix
from worker.gmail.contract import mailbox_workflow_id, signal_mailbox
from worker.newsletter.contract import NEWSLETTER_WORKFLOW, NewsletterJob

log = logging.getLogger(__name__)

BATCH = 200  # Temporal workflows checked per pass and kind
PARALLEL = 8  # describes in flight at once


@dataclass(frozen=True)
class Bounds:
    """How long things may take before they count as stranded."""

    grace: timedelta
    in_flight: timedelta = timedelta(seconds=ATTEMPT_IN_FLIGHT_S)


def stranded_reason(row: Any, running: bool, bounds: Bounds, chain_started: datetime | None = None) -> str | None:
    """Why an open execution of an automation must be handed over again, or None if it must not.

    `row` carries status, signalled_at, next_attempt_at, attempt_started_at and the database's
    `now`; `running` is whether the automation workflow runs, and `chain_started` when its
    current chain of runs began. An execution signalled before that was given to a chain that
    ended (terminated, then started again by newer signals): the running one never had it.
    """
    if running and chain_started is not None and row["signalled_at"] < chain_started:
        running = False
    now: datetime = row["now"]
    next_at: datetime | None = row["next_attempt_at"]
    attempt_at: datetime | None = row["attempt_started_at"]
    attempt_lost = attempt_at is None or attempt_at < now - bounds.in_flight - bounds.grace
    if not running:
        if row["status"] == "queued":
            return "workflow_gone"
        if next_at is not None:
            return "workflow_gone" if next_at <= now else None  # the retry keeps its backoff
        return "workflow_gone" if attempt_lost else None  # its attempt may still be running
    if row["status"] == "queued":
        if row.get("held"):  # an ordered workflow's retry holds it back; the retry is checked itself
            return None
        return "queued_overdue" if row["signalled_at"] < now - bounds.in_flight - bounds.grace else None
    if next_at is not None:
        return "retry_overdue" if next_at < now - bounds.grace else None
    return "attempt_overdue" if attempt_lost else None


class Reconciler:
    """Finds what Temporal holds no longer (or too long) and hands it over again."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        settings: Settings,
        client: Callable[[], Awaitable[Client]],
        metrics: Metrics | None = None,
    ) -> None:
        self._pool = pool
        self._settings = settings
        self._client = client
        self._metrics = Metrics() if metrics is None else metrics
        self._bounds = Bounds(grace=timedelta(seconds=settings.reconcile_grace_s))

    async def run(self, stop: asyncio.Event) -> None:
        """Reconcile every `reconcile_interval_s` until `stop` is set; failures are logged and retried."""
        while not stop.is_set():
            try:
                await self.reconcile_once()
            except Exception as exc:  # storage or Temporal unavailable, or a bug: never take the dispatcher down
                detail = type(exc).__name__ if db.is_storage_error(exc) else exc
                log.warning("reconcile pass failed: %s", detail)
            with suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self._settings.reconcile_interval_s)

    async def reconcile_once(self) -> int:
        """One pass over automations, newsletters and mailboxes; returns how many things were re-driven."""
        grace = self._settings.reconcile_grace_s
        lease = max(self._settings.reconcile_interval_s, 1.0)
        async with self._pool.acquire() as conn:
            await store.forget_old_leases(conn, 3600)
            automations = await store.automations_to_check(conn, grace, BATCH)
            lanes = await store.lanes_to_check(conn, grace, BATCH, lane_prefix(self._settings.task_queue))
            newsletters = await store.newsletters_to_check(conn, grace, BATCH)
            mailboxes = await store.mailboxes_to_check(conn, grace, BATCH)
            keys = [automation_id(str(w)) for w in automations]
            keys += [lane_id(self._settings.task_queue, n) for n in lanes]
            keys += [r["temporal_workflow_id"] for r in newsletters]
            keys += [mailbox_workflow_id(r["credential_id"]) for r in mailboxes]
            leased = set(await store.lease(conn, keys, lease))
        if not leased:
            return 0
        client = await self._client()
        limit = asyncio.Semaphore(PARALLEL)

        async def bounded(job: Awaitable[int]) -> int:
            async with limit:
                return await job

        jobs = [self._automation(client, w) for w in automations if automation_id(str(w)) in leased]
        jobs += [self._lane(client, n) for n in lanes if lane_id(self._settings.task_queue, n) in leased]
        jobs += [self._newsletter(client, r) for r in newsletters if r["temporal_workflow_id"] in leased]
        jobs += [self._mailbox(client, r) for r in mailboxes if mailbox_workflow_id(r["credential_id"]) in leased]
        results = await asyncio.gather(*(bounded(job) for job in jobs), return_exceptions=True)
        redriven = 0
        for result in results:
            if isinstance(result, BaseException):
                log.warning("reconcile check failed: %s", _describe(result))
            else:
                redriven += result
        return redriven

    async def _automation(self, client: Client, workflow_id: UUID) -> int:
        """Executions handed to a user workflow's own automation (before lanes, or lanes off)."""
        cap = self._settings.automation_max_pending
        return await self._holder(
            client, automation_id(str(workflow_id)), lambda conn: store.open_executions(conn, workflow_id, cap)
        )

    async def _lane(self, client: Client, lane: int) -> int:
        """Executions handed to a lane: all its workflows' at once, with one describe."""
        cap = self._settings.lane_max_pending
        return await self._holder(
            client, lane_id(self._settings.task_queue, lane), lambda conn: store.open_lane_executions(conn, lane, cap)
        )

    async def _holder(
        self,
        client: Client,
        temporal_id: str,
        open_rows: Callable[[asyncpg.Connection], Awaitable[list[asyncpg.Record]]],
    ) -> int:
        """Hand back what the Temporal workflow `temporal_id` holds and may have lost."""
        running = await _runs(client, temporal_id)
        if running is None:
            return 0
        chain_started = await _chain_started(client, temporal_id) if running else None
        async with self._pool.acquire() as conn:
            rows = await open_rows(conn)
            chosen = [
                (row, reason) for row in rows if (reason := stranded_reason(row, running, self._bounds, chain_started))
            ]
            if not chosen:
                return 0
            handed = set(
                await store.hand_back(conn, [row["id"] for row, _ in chosen], [row["attempts"] for row, _ in chosen])
            )
        for row, reason in chosen:
            if row["id"] in handed:
                self._metrics.reconciler_actions.labels("execution", reason).inc()
                log.warning(
                    "reconciler: execution %s of workflow %s handed over again (%s; %s was %s)",
                    row["id"],
                    row["workflow_id"],
                    reason,
                    temporal_id,
                    "running" if running else "not running",
                )
        return len(handed)

    async def _newsletter(self, client: Client, row: Any) -> int:
        temporal_id: str = row["temporal_workflow_id"]
        status = await _status(client, temporal_id)
        if status in ("unknown", "running", "completed"):
            return 0  # Temporal did not answer, the newsletter runs, or it finished (and recorded it)
        async with self._pool.acquire() as conn:
            found = await store.newsletter_to_restart(conn, row["id"])
        if found is None:
            return 0  # finished or cancelled meanwhile
        job = NewsletterJob(
            execution_id=str(row["id"]),
            send_at=None if found["send_at"] is None else found["send_at"].timestamp(),
            pause_s=pacing(found["config"]).pause_s,
            heartbeat_timeout_s=self._settings.activity_heartbeat_timeout_s,
            history_limit=self._settings.automation_history_limit,
        )
        try:
            # Each recipient's state is recorded, so a new run sends only to those still open.
            handle = await client.start_workflow(
                NEWSLETTER_WORKFLOW,
                job,
                id=temporal_id,
                task_queue=self._settings.task_queue,
                id_reuse_policy=WorkflowIDReusePolicy.ALLOW_DUPLICATE_FAILED_ONLY,
            )
        except WorkflowAlreadyStartedError:
            return 0  # another replica (or the hand-off) started it meanwhile
        async with self._pool.acquire() as conn:
            await set_temporal_ids(conn, row["id"], temporal_id, handle.first_execution_run_id)
        self._metrics.reconciler_actions.labels("newsletter", "workflow_gone").inc()
        log.warning("reconciler: newsletter of execution %s started again (%s was %s)", row["id"], temporal_id, status)
        return 1

    async def _mailbox(self, client: Client, row: Any) -> int:
        temporal_id = mailbox_workflow_id(row["credential_id"])
        running = await _runs(client, temporal_id)
        if running is None or running:
            return 0
        async with self._pool.acquire() as conn:
            if not await store.mailbox_is_active(conn, row["credential_id"]):
                return 0
        await signal_mailbox(client, self._settings.for_triggers(), MailboxRef(row["owner_id"], row["credential_id"]))
        self._metrics.reconciler_actions.labels("mailbox", "workflow_gone").inc()
        log.warning("reconciler: mailbox workflow %s started again (it was not running)", temporal_id)
        return 1


async def _status(client: Client, temporal_id: str) -> str:
    """The workflow's status in lower case; "missing" if Temporal has none; "unknown" if it did not answer."""
    try:
        description = await client.get_workflow_handle(temporal_id).describe()
    except RPCError as exc:
        if exc.status == RPCStatusCode.NOT_FOUND:
            return "missing"
        log.warning("reconciler: cannot describe %s: %s", temporal_id, _describe(exc))
        return "unknown"
    return description.status.name.lower() if description.status is not None else "unknown"


async def _chain_started(client: Client, temporal_id: str) -> datetime | None:
    """When the running chain of runs (continued-as-new) of a workflow began; None if unknown."""
    try:
        description = await client.get_workflow_handle(temporal_id).describe()
        first_run = description.raw_description.workflow_execution_info.first_run_id
        if first_run and first_run != description.run_id:
            description = await client.get_workflow_handle(temporal_id, run_id=first_run).describe()
    except RPCError as exc:
        log.warning("reconciler: cannot describe %s: %s", temporal_id, _describe(exc))
        return None
    return description.start_time


async def _runs(client: Client, temporal_id: str) -> bool | None:
    """Whether the workflow runs; None when Temporal did not say."""
    status = await _status(client, temporal_id)
    return None if status == "unknown" else status == "running"


def _describe(exc: BaseException) -> str:
    if isinstance(exc, RPCError):
        return f"Temporal error ({exc.status.name}): {exc.message}"[:500]
    return f"{type(exc).__name__}: {exc}"[:500]
