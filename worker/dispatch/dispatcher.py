"""The dispatcher: inbox events -> execution rows -> signals to automation workflows.

Two steps, each its own transaction, both safe to run in any number of replicas:

1. resolve: claim received events (SKIP LOCKED), match them against the cached routes,
   insert one execution per matching workflow (unique per workflow and event) and mark each
   event dispatched or unmatched, with the reason per candidate workflow.
2. hand over: claim executions Temporal has not been given, signal-with-start each user
   workflow's automation with all of its ids in one signal, and mark them signalled.

A crash between signalling and marking re-sends ids on the next pass; the workflow ignores
ids it has seen and the activity skips executions that have finished, so nothing runs twice.
While Temporal is unreachable, step 1 continues and step 2 retries with backoff.

Beside them runs the trigger sync loop (worker/dispatch/trigger_sync.py), which keeps the outside
state some triggers keep (Temporal Schedules) in step with the workflow rows, and the
reconciler (worker/dispatch/reconciler.py), which hands over again what Temporal no longer holds.
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from contextlib import suppress
from datetime import timedelta
from typing import Any
from uuid import UUID

import asyncpg
from temporalio.client import Client
from temporalio.service import RPCError, RPCStatusCode

from runtime.temporal import connect
from schemas import db, jsonlimits
from schemas.sanitize import strip_nul
from schemas.store import events as event_store
from schemas.store import executions as execution_store
from schemas.store import telemetry
from schemas.store.workflows import lock_active
from settings import Settings
from telemetry.metrics import Metrics
from telemetry.tracing import NOOP, Tracing
from triggers.base import InboxEvent
from triggers.resolver import RoutingCache
from worker.automation.contract import (
    ENQUEUE_SIGNAL,
    WORKFLOW_NAME,
    WORKFLOW_TASK_TIMEOUT_S,
    AutomationState,
    Enqueue,
    automation_id,
)
from worker.dispatch.forwarding import ForwardFailed, accept_forwarded, build_forwarders, handover_forwarded
from worker.dispatch.reconciler import Reconciler
from worker.dispatch.trigger_sync import TriggerSyncer

log = logging.getLogger(__name__)

# Automations looked at per hand-over pass (each an index probe); the rest wait for the next pass.
HANDOVER_WORKFLOWS = 5000
INBOX_GAUGE_INTERVAL_S = 5.0  # how often the backlog gauges are refreshed; one indexed query each time
# Pause after a failed pass, doubling while failures last; short, so a stop is never held up long.
STORAGE_BACKOFF_FIRST_S = 0.25
STORAGE_BACKOFF_MAX_S = 2.0


class Dispatcher:
    """Moves events from the inbox to Temporal."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        settings: Settings,
        client: Client | None = None,
        metrics: Metrics | None = None,
        tracing: Tracing = NOOP,
    ) -> None:
        self._pool = pool
        self._settings = settings
        self._tracing = tracing
        self._client = tracing.instrument_client(client) if client is not None else None
        # Without metrics the counters go to a private registry and the inbox is never measured.
        self._metrics = Metrics() if metrics is None else metrics
        self._inbox_gauges_at = 0.0 if metrics is not None else float("inf")
        self._routes = RoutingCache()
        # Internal sources (Gmail pushes) feed hookyard's own workflows, not owners' (worker/dispatch/forwarding.py).
        self._forwarders = build_forwarders(settings)
        self._wake = asyncio.Event()
        self._handover_delay = 0.0
        self._handover_retry_at = 0.0
        self._storage_delay = 0.0  # see _back_off
        # Automations whose hand-over Temporal refused: (retry at, last delay); forgotten after a
        # success or a quiet minute.
        self._workflow_retry: dict[UUID, tuple[float, float]] = {}
        # Where the next hand-over scan starts (see _handover_scan).
        self._handover_after: UUID | None = None

    async def run(self, stop: asyncio.Event) -> None:
        """Dispatch until `stop` is set; woken at once by new events, else polls."""
        listener = asyncio.create_task(self._listen(), name="dispatcher-listener")
        # Its own task: a slow or unreachable Temporal must not hold up resolution.
        syncer = asyncio.create_task(
            TriggerSyncer(self._pool, self._settings, self._client).run(stop), name="trigger-sync"
        )
        reconciler = asyncio.create_task(
            Reconciler(self._pool, self._settings, self._ensure_client, self._metrics).run(stop), name="reconciler"
        )
        try:
            while not stop.is_set():
                # Cleared before the pass, so a commit notified during it triggers another pass.
                self._wake.clear()
                busy = await self._step()
                if not busy:
                    await self._sleep(stop)
        finally:
            await asyncio.wait({syncer, reconciler}, timeout=5)  # `stop` ends them after the call in flight
            for task in (listener, syncer, reconciler):
                task.cancel()
                with suppress(asyncio.CancelledError):
                    await task

    async def _step(self) -> bool:
        """One pass of both steps; True if a step hit its batch limit (more work waits).

        Never raises: the dispatcher outlives any database outage (db.STORAGE_ERRORS back off
        and the pass is tried again) and any unexpected error (logged, then the same).
        """
        limit = self._settings.dispatch_batch_size
        resolved = handed = 0
        await self._observe_inbox()
        try:
            resolved = await self.resolve_once()
            self._storage_delay = 0.0
        except Exception as exc:
            await self._back_off("resolve", exc)
        loop = asyncio.get_running_loop()
        # A deadline, not a countdown: under sustained load the loop never sleeps.
        if loop.time() >= self._handover_retry_at:
            try:
                handed = await self.handover_once() + await self.forward_once()
                self._handover_delay = 0.0
            except TemporalUnavailable as exc:
                self._metrics.handover_failures.inc()
                self._handover_delay = min(max(self._handover_delay * 2, 0.5), 5.0)
                self._handover_retry_at = loop.time() + self._handover_delay
                log.warning("temporal unavailable, executions wait %.1fs: %s", self._handover_delay, exc)
            except Exception as exc:
                await self._back_off("hand-over", exc)
        return resolved >= limit or handed >= limit

    async def _back_off(self, step: str, exc: Exception) -> None:
        """After a failed step: wait a little longer each time (to STORAGE_BACKOFF_MAX_S), then go on."""
        if db.is_storage_error(exc):
            log.warning("%s failed, database unavailable (%s); retrying", step, type(exc).__name__)
        else:
            log.exception("%s failed unexpectedly; retrying", step)
        self._storage_delay = min(max(self._storage_delay * 2, STORAGE_BACKOFF_FIRST_S), STORAGE_BACKOFF_MAX_S)
        await asyncio.sleep(self._storage_delay)

    async def _observe_inbox(self) -> None:
        """Refresh the backlog and lag gauges, at most every INBOX_GAUGE_INTERVAL_S."""
        now = asyncio.get_running_loop().time()
        if now < self._inbox_gauges_at:
            return
        self._inbox_gauges_at = now + INBOX_GAUGE_INTERVAL_S
        try:
            async with self._pool.acquire() as conn:
                self._metrics.set_inbox(*await telemetry.inbox_depth(conn))
        except Exception as exc:  # gauges only: whatever went wrong, dispatching goes on
            log.warning("inbox gauges not refreshed: %s", type(exc).__name__)

    async def _sleep(self, stop: asyncio.Event) -> None:
        timeout = self._settings.dispatch_poll_interval_s
        wait_handover = self._handover_retry_at - asyncio.get_running_loop().time()
        if wait_handover > 0:
            timeout = min(timeout, wait_handover)
        waiters = [asyncio.ensure_future(self._wake.wait()), asyncio.ensure_future(stop.wait())]
        await asyncio.wait(waiters, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        for waiter in waiters:
            waiter.cancel()

    async def resolve_once(self) -> int:
        """Resolve one batch of received events; returns how many were claimed.

        Failures are isolated per event. An exception while planning one event (its trigger
        data, its filters) marks that event `rejected` and the batch goes on. If the batch's
        transaction fails as a whole (PostgreSQL refused one event's executions, say), its
        events are resolved again one by one, each in its own transaction, so only the event
        that fails alone is rejected. Connection and transient database errors reject
        nothing: the events stay `received` and the next pass retries them.
        """
        claimed: list[UUID] = []
        try:
            return await self._resolve(claimed)
        except Exception as exc:
            if not claimed or db.is_storage_error(exc):
                raise
            log.warning("resolve of %d events failed (%s); resolving them one by one", len(claimed), type(exc).__name__)
        for event_id in claimed:
            await self._resolve_alone(event_id)
        return len(claimed)

    async def _resolve_alone(self, event_id: UUID) -> None:
        """Resolve one event in its own transaction; reject it if that fails on its account."""
        claimed: list[UUID] = []
        try:
            await self._resolve(claimed, only=event_id)
        except Exception as exc:
            # Before the claim the failure is not this event's (the routing cache, the claim itself).
            if not claimed or db.is_storage_error(exc):
                raise
            reason = _rejection("storing its executions", exc)
            async with self._pool.acquire() as conn:
                if await event_store.mark_rejected(conn, event_id, reason):
                    self._count_rejected(event_id, reason, exc)

    async def _resolve(self, claimed: list[UUID], only: UUID | None = None) -> int:
        """One transaction: claim, plan, create executions, mark. Claimed ids go to `claimed`."""
        rejected: dict[UUID, tuple[str, Exception]] = {}
        async with self._pool.acquire() as conn, conn.transaction():
            await self._routes.sync(conn)
            rows = await event_store.claim_received(conn, self._settings.dispatch_batch_size, only=only)
            if not rows:
                return 0
            events = [_inbox_event(r, self._settings.max_json_depth) for r in rows]
            claimed.extend(e.id for e in events)
            forwarded = await accept_forwarded(conn, self._forwarders, events)
            events = [e for e in events if e.id not in forwarded]
            plan: list[list[dict[str, Any]]] = []
            for event in events:
                try:
                    plan.append(await self._plan(conn, event))
                except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
                    raise  # the transaction may be unusable: the caller decides what to retry or reject
                except Exception as exc:
                    rejected[event.id] = (_rejection("planning", exc), exc)
                    plan.append([])
            wanted = sorted({c["workflow_id"] for cands in plan for c in cands if c["matched"]})
            active = await lock_active(conn, [UUID(w) for w in wanted]) if wanted else set()
            created = await self._create_executions(conn, events, plan, active)
            statuses: list[str] = []
            resolutions: list[list[dict[str, Any]]] = []
            notes: list[str | None] = []
            for event, candidates in zip(events, plan, strict=True):
                if event.id in rejected:
                    statuses.append("rejected")
                    resolutions.append([])
                    notes.append(rejected[event.id][0])
                    continue
                for cand in candidates:
                    cand["execution_id"] = created.get((cand["workflow_id"], str(event.id)))
                    if cand["matched"] and cand["execution_id"] is None:
                        cand["reason"] = "workflow was deactivated before the event was dispatched"
                statuses.append("dispatched" if any(c["execution_id"] for c in candidates) else "unmatched")
                resolutions.append([{k: v for k, v in c.items() if k != "trigger_data"} for c in candidates])
                notes.append(self._body_note(event) if candidates else None)
            await event_store.mark_resolved(conn, [e.id for e in events], statuses, resolutions, notes)
        for status in statuses:
            self._metrics.dispatched_events.labels(status).inc()
        for event_id, (reason, failure) in rejected.items():
            self._count_rejected(event_id, reason, failure, counted=True)
        return len(rows)

    def _count_rejected(self, event_id: UUID, reason: str, exc: Exception, *, counted: bool = False) -> None:
        if not counted:
            self._metrics.dispatched_events.labels("rejected").inc()
        # The traceback is for operators; owners see only `reason` (GET /api/events/{id}).
        log.error("event %s rejected: %s", event_id, reason, exc_info=exc)

    def _body_note(self, event: InboxEvent) -> str | None:
        """Why triggers saw the body as text although it may be JSON: it nests too deep."""
        if jsonlimits.exceeds_depth(event.body, event.max_json_depth):
            return (
                f"body not parsed as JSON: nested deeper than {event.max_json_depth} levels "
                "(max_json_depth); triggers saw it as text"
            )
        return None

    async def _plan(self, conn: asyncpg.Connection, event: InboxEvent) -> list[dict[str, Any]]:
        candidates = await self._routes.candidates(conn, event)
        data_by_trigger: dict[str, dict[str, Any]] = {}
        plan = []
        for trigger, spec in candidates:
            if trigger.name not in data_by_trigger:
                # Bodies may carry NUL, which jsonb refuses; one such event must not stall dispatch.
                data_by_trigger[trigger.name] = strip_nul(trigger.trigger_data(event))
            data = data_by_trigger[trigger.name]
            outcome = trigger.match(spec.trigger_config, data)
            plan.append(
                {
                    "workflow_id": str(spec.id),
                    "trigger": trigger.name,
                    "matched": outcome.matched,
                    "reason": outcome.reason,
                    # Which conditions were evaluated and what each saw (the same trace a dry run shows).
                    "trace": outcome.trace_json(),
                    "execution_id": None,
                    "trigger_data": data,
                }
            )
        return plan

    async def _create_executions(
        self,
        conn: asyncpg.Connection,
        events: list[InboxEvent],
        plan: list[list[dict[str, Any]]],
        active: set[UUID],
    ) -> dict[tuple[str, str], str]:
        owners, workflows, event_ids, data = [], [], [], []
        for event, candidates in zip(events, plan, strict=True):
            for cand in candidates:
                if cand["matched"] and UUID(cand["workflow_id"]) in active:
                    owners.append(event.owner_id)
                    workflows.append(UUID(cand["workflow_id"]))
                    event_ids.append(event.id)
                    data.append(cand["trigger_data"])
        if not owners:
            return {}
        created = await execution_store.insert_for_events(conn, owners, workflows, event_ids, data)
        return {(str(w), str(e)): str(x) for (w, e), x in created.items()}

    async def forward_once(self) -> int:
        """Signal hookyard's own workflows what internal sources have pending for them."""
        try:
            return await handover_forwarded(
                self._pool, self._ensure_client, self._forwarders, self._settings.dispatch_batch_size
            )
        except ForwardFailed as exc:
            raise TemporalUnavailable(str(exc)) from exc

    async def handover_once(self) -> int:
        """Signal one batch of queued executions to their automations; returns how many were claimed.

        Each automation holds at most `automation_max_pending` unfinished executions; the rest
        wait here. A signal that fails for some automations while Temporal takes the others
        backs off only those (Temporal refused that one workflow); if every signal fails,
        Temporal is taken to be unreachable and the whole hand-over backs off.
        """
        now = asyncio.get_running_loop().time()
        self._workflow_retry = {wf: due for wf, due in self._workflow_retry.items() if due[0] + 60 > now}
        async with self._pool.acquire() as conn, conn.transaction():
            wanted = await self._handover_scan(conn)
            wanted = [wf for wf in wanted if self._workflow_retry.get(wf, (0.0, 0.0))[0] <= now]
            if not wanted:
                return 0
            rows = await execution_store.claim_handover(
                conn, wanted, self._settings.dispatch_batch_size, self._settings.automation_max_pending
            )
            if not rows:
                return 0
            client = await self._ensure_client()
            groups: dict[UUID, list[asyncpg.Record]] = defaultdict(list)
            for row in rows:
                groups[row["workflow_id"]].append(row)
            traces = (
                await telemetry.traceparents_for_executions(conn, [r["id"] for r in rows])
                if self._tracing.enabled
                else {}
            )
            results = await asyncio.gather(
                *(self._signal(client, wf, group, traces) for wf, group in groups.items()), return_exceptions=True
            )
            done = [
                r["id"] for (wf, group), res in zip(groups.items(), results, strict=True) if res is None for r in group
            ]
            if done:
                await execution_store.mark_signalled(conn, done)
                self._metrics.handover_executions.inc(len(done))
            failed = {wf: res for wf, res in zip(groups, results, strict=True) if isinstance(res, BaseException)}
        if failed and (len(failed) == len(groups) and any(_unreachable(exc) for exc in failed.values())):
            first = next(iter(failed.values()))
            raise TemporalUnavailable(f"{len(failed)} of {len(groups)} signals failed: {first!r}")
        for wf, exc in failed.items():
            self._workflow_failed(wf, exc)
        return len(rows)

    def _workflow_failed(self, workflow_id: UUID, exc: BaseException) -> None:
        """Temporal refused one automation's hand-over: retry it alone, later (1 s doubling to 30 s)."""
        previous = self._workflow_retry.get(workflow_id, (0.0, 0.0))[1]
        delay = min(max(previous * 2, 1.0), 30.0)
        self._workflow_retry[workflow_id] = (asyncio.get_running_loop().time() + delay, delay)
        self._metrics.handover_workflow_failures.inc()
        log.warning(
            "hand-over to automation of workflow %s failed, retrying it in %.0fs: %s",
            workflow_id,
            delay,
            _describe(exc),
        )

    async def _handover_scan(self, conn: asyncpg.Connection) -> list[UUID]:
        """The next HANDOVER_WORKFLOWS automations with work, going round: a pass starts where the
        last one stopped, so automations that are full or backing off cannot starve the rest."""
        wanted = await execution_store.handover_workflows(conn, HANDOVER_WORKFLOWS, self._handover_after)
        if len(wanted) < HANDOVER_WORKFLOWS and self._handover_after is not None:
            seen = set(wanted)
            more = await execution_store.handover_workflows(conn, HANDOVER_WORKFLOWS - len(wanted))
            wanted += [wf for wf in more if wf not in seen]
        self._handover_after = wanted[-1] if len(wanted) >= HANDOVER_WORKFLOWS else None
        return wanted

    async def _signal(
        self, client: Client, workflow_id: UUID, rows: list[asyncpg.Record], traces: dict[UUID, str]
    ) -> None:
        limit = rows[0]["concurrency_limit"]
        ids = [str(r["id"]) for r in rows]
        redrive = [str(r["id"]) for r in rows if r["redrive"]]
        # Continues the first event's trace (links the rest); Temporal's interceptor carries it on.
        with self._tracing.continued_span(
            "hookyard.handover",
            [traces.get(r["id"]) for r in rows],
            {"hookyard.workflow_id": str(workflow_id), "hookyard.executions": len(ids)},
        ):
            await self._start_or_signal(client, workflow_id, ids, limit, redrive)
        self._workflow_retry.pop(workflow_id, None)

    async def _start_or_signal(
        self, client: Client, workflow_id: UUID, ids: list[str], limit: int, redrive: list[str] | None = None
    ) -> None:
        await client.start_workflow(
            WORKFLOW_NAME,
            AutomationState(
                workflow_id=str(workflow_id),
                concurrency_limit=limit,
                max_batch=self._settings.automation_max_batch,
                idle_timeout_s=self._settings.automation_idle_timeout_s,
                heartbeat_timeout_s=self._settings.activity_heartbeat_timeout_s,
                history_limit=self._settings.automation_history_limit,
            ),
            id=automation_id(str(workflow_id)),
            task_queue=self._settings.task_queue,
            task_timeout=timedelta(seconds=WORKFLOW_TASK_TIMEOUT_S),
            start_signal=ENQUEUE_SIGNAL,
            start_signal_args=[Enqueue(ids, limit, redrive or [])],
        )

    async def _ensure_client(self) -> Client:
        if self._client is None:
            try:
                self._client = self._tracing.instrument_client(await asyncio.wait_for(connect(self._settings), 5))
            except Exception as exc:
                raise TemporalUnavailable(f"cannot connect to {self._settings.temporal_address}") from exc
        return self._client

    async def _listen(self) -> None:
        """Wake the loop on every commit to the inbox (NOTIFY); polling covers any gap."""
        await db.listen(self._settings.database_url, event_store.EVENTS_CHANNEL, lambda _: self._wake.set())


class TemporalUnavailable(RuntimeError):
    """Temporal could not take the hand-over; executions stay queued and are retried."""


def _rejection(stage: str, exc: BaseException) -> str:
    """The reason shown to the owner: the stage and the kind of failure, never its message."""
    return f"the dispatcher failed while {stage} ({type(exc).__name__}); the event runs nothing and is not retried"


_UNREACHABLE = frozenset({RPCStatusCode.UNAVAILABLE, RPCStatusCode.DEADLINE_EXCEEDED, RPCStatusCode.CANCELLED})


def _unreachable(exc: BaseException) -> bool:
    """Whether a failed signal says Temporal itself could not be reached (rather than refusing one workflow)."""
    if isinstance(exc, RPCError):
        return exc.status in _UNREACHABLE
    return isinstance(exc, (TemporalUnavailable, OSError, TimeoutError, RuntimeError))


def _describe(exc: BaseException) -> str:
    if isinstance(exc, RPCError):
        return f"Temporal error ({exc.status.name}): {exc.message}"[:500]
    return type(exc).__name__


def _inbox_event(row: asyncpg.Record, max_json_depth: int) -> InboxEvent:
    return InboxEvent(
        id=row["id"],
        owner_id=row["owner_id"],
        source_type=row["source_type"],
        source_id=row["source_id"],
        headers=row["headers"],
        body=row["body"],
        received_at=row["received_at"].isoformat(),
        max_json_depth=max_json_depth,
    )
