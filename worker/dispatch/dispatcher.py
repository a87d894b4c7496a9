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
from dataclasses import dataclass
from datetime import timedelta
from typing import Any
from uuid import UUID

import asyncpg
from temporalio.client import Client
from temporalio.service import RPCError, RPCStatusCode

from oauth.crypto import Keyring
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
    LANE_ENQUEUE_SIGNAL,
    LANE_WORKFLOW_NAME,
    WORKFLOW_NAME,
    WORKFLOW_TASK_TIMEOUT_S,
    AutomationState,
    Enqueue,
    LaneEnqueue,
    LaneState,
    LaneWork,
    automation_id,
    lane_id,
)
from worker.dispatch.forwarding import ForwardFailed, accept_forwarded, build_forwarders, handover_forwarded
from worker.dispatch.outbox import OUTBOX_POOL_MAX, OutboxPoller
from worker.dispatch.reconciler import Reconciler
from worker.dispatch.trigger_sync import TriggerSyncer

log = logging.getLogger(__name__)

# Automations looked at per hand-over pass (each an index probe); the rest wait for the next pass.
HANDOVER_WORKFLOWS = 5000
INBOX_GAUGE_INTERVAL_S = 5.0  # how often the backlog gauges are refreshed; one indexed query each time
# Pause after a failed pass, doubling while failures last; short, so a stop is never held up long.
STORAGE_BACKOFF_FIRST_S = 0.25
STORAGE_BACKOFF_MAX_S = 2.0


@dataclass(frozen=True)
class Resolution:
    """What became of one candidate workflow of an event, as stored in the event's resolutions."""

    workflow_id: UUID
    trigger: str
    matched: bool
    reason: str
    trace: list[dict[str, Any]]
    execution_id: UUID | None

    def as_json(self) -> dict[str, Any]:
        """The stored (and API-visible) form."""
        return {
            "workflow_id": str(self.workflow_id),
            "trigger": self.trigger,
            "matched": self.matched,
            "reason": self.reason,
            # Which conditions were evaluated and what each saw (the same trace a dry run shows).
            "trace": self.trace,
            "execution_id": None if self.execution_id is None else str(self.execution_id),
        }


@dataclass(frozen=True)
class Candidate:
    """A workflow an event was routed to, whether its trigger matched, and the trigger data."""

    workflow_id: UUID
    trigger: str
    matched: bool
    reason: str
    trace: list[dict[str, Any]]
    trigger_data: dict[str, Any]

    def resolve(self, execution_id: UUID | None) -> Resolution:
        """The resolution once executions are created (None: none was created for it)."""
        reason = self.reason
        if self.matched and execution_id is None:
            reason = "workflow was deactivated before the event was dispatched"
        return Resolution(self.workflow_id, self.trigger, self.matched, reason, self.trace, execution_id)


@dataclass(frozen=True)
class Handover:
    """One signal of a hand-over pass: to a lane (`lane` set) or to one workflow's automation."""

    temporal_id: str
    lane: int | None
    rows: list[asyncpg.Record]

    def work(self) -> list[LaneWork]:
        """The executions per user workflow, in hand-over (seq) order, with their limits."""
        by_workflow: dict[UUID, list[asyncpg.Record]] = defaultdict(list)
        for row in self.rows:
            by_workflow[row["workflow_id"]].append(row)
        return [
            LaneWork(
                str(workflow_id),
                [str(r["id"]) for r in rows],
                rows[0]["concurrency_limit"],
                [str(r["id"]) for r in rows if r["redrive"]],
                rows[0]["ordered"],
            )
            for workflow_id, rows in by_workflow.items()
        ]

    def workflows(self) -> list[UUID]:
        """The user workflows whose executions this signal carries."""
        return list(dict.fromkeys(r["workflow_id"] for r in self.rows))

    def split(self) -> list[Handover]:
        """The same hand-over as one signal per user workflow."""
        return [
            Handover(self.temporal_id, self.lane, [r for r in self.rows if r["workflow_id"] == wf])
            for wf in self.workflows()
        ]


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
        # Owners' outbox tables: its own task, so a slow owner database never holds up resolution.
        outbox = asyncio.create_task(self._run_outbox(stop), name="outbox")
        try:
            while not stop.is_set():
                # Cleared before the pass, so a commit notified during it triggers another pass.
                self._wake.clear()
                busy = await self._step()
                if not busy:
                    await self._sleep(stop)
        finally:
            await asyncio.wait({syncer, reconciler, outbox}, timeout=5)  # `stop` ends them after the call in flight
            for task in (listener, syncer, reconciler, outbox):
                task.cancel()
                with suppress(asyncio.CancelledError):
                    await task

    async def _run_outbox(self, stop: asyncio.Event) -> None:
        if not self._settings.master_keys:  # credentials cannot be read: the process start refuses this
            log.warning("no master keys: database outboxes are not polled")
            return
        keyring = Keyring(self._settings.master_keys)
        # A pool of its own: owners' slow databases hold these connections, never resolution's.
        # min_size 0 connects nothing here, so a database still starting cannot fail the task.
        pool = await db.create_pool(self._settings.database_url, min_size=0, max_size=OUTBOX_POOL_MAX)
        try:
            await OutboxPoller(pool, self._settings, keyring, metrics=self._metrics).run(stop)
        finally:
            await pool.close()

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
            plan: list[list[Candidate]] = []
            for event in events:
                try:
                    plan.append(await self._plan(conn, event))
                except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
                    raise  # the transaction may be unusable: the caller decides what to retry or reject
                except Exception as exc:
                    rejected[event.id] = (_rejection("planning", exc), exc)
                    plan.append([])
            wanted = sorted({c.workflow_id for cands in plan for c in cands if c.matched})
            active = await lock_active(conn, wanted) if wanted else set()
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
                results = [c.resolve(created.get((c.workflow_id, event.id))) for c in candidates]
                statuses.append("dispatched" if any(r.execution_id for r in results) else "unmatched")
                resolutions.append([r.as_json() for r in results])
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

    async def _plan(self, conn: asyncpg.Connection, event: InboxEvent) -> list[Candidate]:
        candidates = await self._routes.candidates(conn, event)
        data_by_trigger: dict[str, dict[str, Any]] = {}
        plan: list[Candidate] = []
        for trigger, spec in candidates:
            if trigger.name not in data_by_trigger:
                # Bodies may carry NUL, which jsonb refuses; one such event must not stall dispatch.
                data_by_trigger[trigger.name] = strip_nul(trigger.trigger_data(event))
            data = data_by_trigger[trigger.name]
            outcome = trigger.match(spec.trigger_config, data)
            plan.append(Candidate(spec.id, trigger.name, outcome.matched, outcome.reason, outcome.trace_json(), data))
        return plan

    async def _create_executions(
        self,
        conn: asyncpg.Connection,
        events: list[InboxEvent],
        plan: list[list[Candidate]],
        active: set[UUID],
    ) -> dict[tuple[UUID, UUID], UUID]:
        """Executions created, by (workflow id, event id)."""
        owners: list[UUID] = []
        workflows: list[UUID] = []
        event_ids: list[UUID] = []
        data: list[dict[str, Any]] = []
        for event, candidates in zip(events, plan, strict=True):
            for cand in candidates:
                if cand.matched and cand.workflow_id in active:
                    owners.append(event.owner_id)
                    workflows.append(cand.workflow_id)
                    event_ids.append(event.id)
                    data.append(cand.trigger_data)
        if not owners:
            return {}
        return await execution_store.insert_for_events(conn, owners, workflows, event_ids, data)

    async def forward_once(self) -> int:
        """Signal hookyard's own workflows what internal sources have pending for them."""
        try:
            return await handover_forwarded(
                self._pool, self._ensure_client, self._forwarders, self._settings.dispatch_batch_size
            )
        except ForwardFailed as exc:
            raise TemporalUnavailable(str(exc)) from exc

    async def handover_once(self) -> int:
        """Signal one batch of queued executions to their lanes (or automations); returns how many
        were handed over.

        Each user workflow has at most `automation_max_pending` unfinished executions in Temporal,
        each lane at most `lane_max_pending`; the rest wait here. With lanes, one signal per lane
        touched carries the executions of all its workflows. A lane's signal that Temporal
        refuses (while taking others) is sent again split per workflow, so only a workflow that
        is refused alone backs off; if every signal fails for want of Temporal, the whole
        hand-over backs off.
        """
        now = asyncio.get_running_loop().time()
        self._workflow_retry = {wf: due for wf, due in self._workflow_retry.items() if due[0] + 60 > now}
        async with self._pool.acquire() as conn, conn.transaction():
            wanted = await self._handover_scan(conn)
            wanted = [wf for wf in wanted if self._workflow_retry.get(wf, (0.0, 0.0))[0] <= now]
            rooms: dict[int, int] = {}
            if wanted and self._settings.lanes > 0:
                lanes = await execution_store.workflow_lanes(conn, wanted)
                cap = self._settings.lane_max_pending
                rooms = await execution_store.lane_rooms(conn, sorted(set(lanes.values())), cap)
                wanted = [wf for wf in wanted if rooms.get(lanes.get(wf, -1), 0) > 0]
            if not wanted:
                return 0
            rows = await execution_store.claim_handover(
                conn, wanted, self._settings.dispatch_batch_size, self._settings.automation_max_pending
            )
            if self._settings.lanes > 0:
                rows = _within_rooms(rows, rooms)
            if not rows:
                return 0
            client = await self._ensure_client()
            traces = (
                await telemetry.traceparents_for_executions(conn, [r["id"] for r in rows])
                if self._tracing.enabled
                else {}
            )
            sent, failed = await self._send_all(client, self._handovers(rows), traces)
            done = [r for h in sent for r in h.rows]
            if done:
                await execution_store.mark_signalled(
                    conn, [r["id"] for r in done], [h.lane for h in sent for _ in h.rows]
                )
                self._metrics.handover_executions.inc(len(done))
        if failed and not sent and any(_unreachable(exc) for _, exc in failed):
            first = failed[0][1]
            raise TemporalUnavailable(f"{len(failed)} signals failed: {first!r}")
        for handover, exc in failed:
            for workflow_id in handover.workflows():
                self._workflow_failed(workflow_id, exc)
        return len(rows)

    def _handovers(self, rows: list[asyncpg.Record]) -> list[Handover]:
        """One signal per lane touched, or per workflow without lanes."""
        groups: dict[str, list[asyncpg.Record]] = defaultdict(list)
        lanes: dict[str, int | None] = {}
        for row in rows:
            lane = row["lane"] if self._settings.lanes > 0 else None
            key = automation_id(str(row["workflow_id"])) if lane is None else lane_id(self._settings.task_queue, lane)
            groups[key].append(row)
            lanes[key] = lane
        return [Handover(key, lanes[key], group) for key, group in groups.items()]

    async def _send_all(
        self, client: Client, handovers: list[Handover], traces: dict[UUID, str]
    ) -> tuple[list[Handover], list[tuple[Handover, BaseException]]]:
        """Send every signal; a lane's refused signal (not for want of Temporal) is split per workflow."""
        results = await asyncio.gather(*(self._signal(client, h, traces) for h in handovers), return_exceptions=True)
        sent: list[Handover] = []
        failed: list[tuple[Handover, BaseException]] = []
        retry: list[Handover] = []
        for handover, result in zip(handovers, results, strict=True):
            if result is None:
                sent.append(handover)
            elif handover.lane is not None and len(handover.workflows()) > 1 and not _unreachable(result):
                retry += handover.split()
            else:
                failed.append((handover, result))
        if retry:
            results = await asyncio.gather(*(self._signal(client, h, traces) for h in retry), return_exceptions=True)
            for handover, result in zip(retry, results, strict=True):
                if result is None:
                    sent.append(handover)
                else:
                    failed.append((handover, result))
        return sent, failed

    def _workflow_failed(self, workflow_id: UUID, exc: BaseException) -> None:
        """Temporal refused one workflow's hand-over: retry it alone, later (1 s doubling to 30 s)."""
        previous = self._workflow_retry.get(workflow_id, (0.0, 0.0))[1]
        delay = min(max(previous * 2, 1.0), 30.0)
        self._workflow_retry[workflow_id] = (asyncio.get_running_loop().time() + delay, delay)
        self._metrics.handover_workflow_failures.inc()
        log.warning(
            "hand-over of workflow %s failed, retrying it in %.0fs: %s",
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

    async def _signal(self, client: Client, handover: Handover, traces: dict[UUID, str]) -> None:
        rows = handover.rows
        # Continues the first event's trace (links the rest); Temporal's interceptor carries it on.
        with self._tracing.continued_span(
            "hookyard.handover",
            [traces.get(r["id"]) for r in rows],
            {"hookyard.temporal_workflow_id": handover.temporal_id, "hookyard.executions": len(rows)},
        ):
            await self._start_or_signal(client, handover)
        for workflow_id in handover.workflows():
            self._workflow_retry.pop(workflow_id, None)

    async def _start_or_signal(self, client: Client, handover: Handover) -> None:
        """One signal-with-start: to the lane, or (lanes off) to the workflow's own automation."""
        settings = self._settings
        state: LaneState | AutomationState
        message: LaneEnqueue | Enqueue
        if handover.lane is not None:
            name, signal, message = LANE_WORKFLOW_NAME, LANE_ENQUEUE_SIGNAL, LaneEnqueue(handover.work())
            state = LaneState(
                lane=handover.lane,
                max_batch=settings.automation_max_batch,
                idle_timeout_s=settings.automation_idle_timeout_s,
                heartbeat_timeout_s=settings.activity_heartbeat_timeout_s,
                history_limit=settings.automation_history_limit,
            )
        else:
            (work,) = handover.work()
            name, signal = WORKFLOW_NAME, ENQUEUE_SIGNAL
            message = Enqueue(work.execution_ids, work.concurrency_limit, work.redrive)
            state = AutomationState(
                workflow_id=work.workflow_id,
                concurrency_limit=work.concurrency_limit,
                max_batch=settings.automation_max_batch,
                idle_timeout_s=settings.automation_idle_timeout_s,
                heartbeat_timeout_s=settings.activity_heartbeat_timeout_s,
                history_limit=settings.automation_history_limit,
            )
        await client.start_workflow(
            name,
            state,
            id=handover.temporal_id,
            task_queue=settings.task_queue,
            task_timeout=timedelta(seconds=WORKFLOW_TASK_TIMEOUT_S),
            start_signal=signal,
            start_signal_args=[message],
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


def _within_rooms(rows: list[asyncpg.Record], rooms: dict[int, int]) -> list[asyncpg.Record]:
    """The first rows (in seq order, so a prefix of each workflow's) each lane has room for."""
    left = dict(rooms)
    kept = []
    for row in rows:
        if left.get(row["lane"], 0) > 0:
            left[row["lane"]] -= 1
            kept.append(row)
    return kept


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
