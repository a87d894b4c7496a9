"""The lane workflow: runs the executions of many user workflows, so Temporal's cost per event
does not grow with the number of workflows (docs/architecture.md, "Execution lanes").

`HOOKYARD_LANES` lanes per task queue (`lane-<task queue>-<n>`); each user workflow belongs to one lane
(`workflows.lane`) for good, so all of its executions meet here. Per user workflow the lane
keeps what the per-workflow automation keeps (worker/automation/workflow.py): a FIFO of pending ids, the
number in flight against its own concurrency limit, and its retries. One durable timer serves
the lane's earliest due retry. Batches are filled round-robin across the lane's workflows, one
execution of each ready workflow per round, so a hot workflow cannot starve the others in its
lane, and one activity carries executions of many workflows. Ids already known (re-sent after a
dispatcher crash) are ignored; ids the reconciler hands back are taken again unless pending, in
flight or waiting for a retry. PostgreSQL decides what may run (`claim_for_run`): finished
executions are skipped, those of a deactivated workflow cancelled. Idle for `idle_timeout_s`,
the lane completes; it continues as new at `history_limit` history events, carrying its queues.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from worker.automation.contract import (
        LANE_ENQUEUE_SIGNAL,
        LANE_WORKFLOW_NAME,
        WORKFLOW_TASK_TIMEOUT_S,
        LaneEnqueue,
        LaneQueue,
        LaneState,
        Outcome,
        Retry,
        execute_batch,
    )

# Finished ids remembered to ignore a re-sent hand-over (a re-run is safe anyway: claim_for_run
# skips finished executions); continue-as-new carries the newest _RECENT_CARRIED of them.
RECENT_KEPT = 4000
_RECENT_CARRIED = 1000


@dataclass
class _Queue:
    """One user workflow inside the lane."""

    workflow_id: str
    limit: int
    pending: deque[str] = field(default_factory=deque)
    retries: list[Retry] = field(default_factory=list)
    inflight: int = 0
    ordered: bool = False  # LaneWork.ordered: a waiting retry holds back the later executions

    def idle(self) -> bool:
        return not (self.pending or self.retries or self.inflight)

    def may_start(self) -> bool:
        """Whether the next pending execution may start now."""
        return bool(self.pending) and self.inflight < self.limit and not (self.ordered and self.retries)


@workflow.defn(name=LANE_WORKFLOW_NAME)
class LaneWorkflow:
    """Runs the executions of the user workflows of one lane as they are signalled in."""

    def __init__(self) -> None:
        self._state = LaneState(lane=0)
        self._started = False
        self._early: list[LaneEnqueue] = []  # signals handled before run() restored the state
        self._queues: dict[str, _Queue] = {}
        self._ring: deque[str] = deque()  # workflows with pending ids, in round-robin order
        self._in_ring: set[str] = set()
        self._open: set[str] = set()  # pending, in flight or waiting for a retry
        self._inflight: dict[str, str] = {}  # execution id -> user workflow id
        self._recent: deque[str] = deque(maxlen=RECENT_KEPT)
        self._known: set[str] = set()
        self._tasks: set[asyncio.Future[None]] = set()
        self._changes = 0  # bumped by every signal and finished batch; wakes the main loop

    @workflow.signal(name=LANE_ENQUEUE_SIGNAL)
    def enqueue(self, message: LaneEnqueue) -> None:
        """Accept executions of the lane's workflows, with each workflow's latest concurrency limit."""
        self._changes += 1
        if not self._started:
            self._early.append(message)
            return
        self._accept(message)

    def _accept(self, message: LaneEnqueue) -> None:
        for work in message.work:
            queue = self._queue(work.workflow_id, work.concurrency_limit)
            queue.limit = max(1, work.concurrency_limit)
            queue.ordered = work.ordered
            redrive = set(work.redrive)
            for execution_id in work.execution_ids:
                if execution_id not in self._known:
                    self._known.add(execution_id)
                    self._add_pending(queue, execution_id)
                elif execution_id in redrive and execution_id not in self._open:
                    self._add_pending(queue, execution_id)

    def _queue(self, workflow_id: str, limit: int) -> _Queue:
        queue = self._queues.get(workflow_id)
        if queue is None:
            queue = self._queues[workflow_id] = _Queue(workflow_id, max(1, limit))
        return queue

    def _add_pending(self, queue: _Queue, execution_id: str, first: bool = False) -> None:
        if first:
            queue.pending.appendleft(execution_id)
        else:
            queue.pending.append(execution_id)
        self._open.add(execution_id)
        if queue.workflow_id not in self._in_ring:
            self._in_ring.add(queue.workflow_id)
            self._ring.append(queue.workflow_id)

    @workflow.run
    async def run(self, state: LaneState) -> None:
        """Loop until idle or until history asks for a fresh run."""
        self._restore(state)
        idle_since = workflow.now().timestamp()
        while True:
            self._release_due_retries()
            self._start_batches()
            if self._open:
                idle_since = workflow.now().timestamp()
            if self._should_continue_as_new():
                await workflow.wait_condition(lambda: not self._inflight)
                await workflow.wait_condition(workflow.all_handlers_finished)
                workflow.continue_as_new(self._snapshot(), task_timeout=timedelta(seconds=WORKFLOW_TASK_TIMEOUT_S))
            timeout = self._next_wake(idle_since)
            if timeout is not None and timeout <= 0:
                if not self._open:
                    await workflow.wait_condition(workflow.all_handlers_finished)
                    return
                continue  # a retry is due now
            with contextlib.suppress(TimeoutError):
                await workflow.wait_condition(self._changed_since(self._changes), timeout=timeout)

    def _changed_since(self, seen: int) -> Callable[[], bool]:
        return lambda: self._changes != seen

    def _restore(self, state: LaneState) -> None:
        self._state = state
        self._recent = deque(state.recent, maxlen=RECENT_KEPT)
        self._known = set(self._recent)
        for carried in state.queues:
            queue = self._queue(carried.workflow_id, carried.concurrency_limit)
            queue.ordered = carried.ordered
            for execution_id in carried.pending:
                self._known.add(execution_id)
                self._add_pending(queue, execution_id)
            for retry in carried.retries:
                self._known.add(retry.execution_id)
                self._open.add(retry.execution_id)
                queue.retries.append(retry)
        self._started = True
        # Signals may have been handled before run() started (signal-with-start, continue-as-new).
        for message in self._early:
            self._accept(message)
        self._early = []

    def _release_due_retries(self) -> None:
        now = workflow.now().timestamp()
        for queue in self._queues.values():
            if not queue.retries or all(r.due > now for r in queue.retries):
                continue
            due = [r for r in queue.retries if r.due <= now]
            queue.retries = [r for r in queue.retries if r.due > now]
            # An ordered queue's retry goes before the executions it held back.
            for retry in reversed(due) if queue.ordered else due:
                self._add_pending(queue, retry.execution_id, first=queue.ordered)

    def _next_wake(self, idle_since: float) -> float | None:
        """Seconds until the lane's earliest retry (its one timer), None to wait for a change,
        or the time left before it counts as idle."""
        now = workflow.now().timestamp()
        dues = [r.due for queue in self._queues.values() for r in queue.retries]
        if dues:
            return max(0.0, min(dues) - now)
        if self._open:
            return None  # woken by a batch finishing or a signal
        return idle_since + self._state.idle_timeout_s - now

    def _start_batches(self) -> None:
        while batch := self._fill():
            task = asyncio.ensure_future(self._run_batch(batch))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    def _fill(self) -> list[str]:
        """The next batch: round after round, one pending id of each workflow below its limit.

        The ring keeps its rotation between batches, so the next batch starts with the
        workflow after the last one served.
        """
        batch: list[str] = []
        while len(batch) < self._state.max_batch and self._ring:
            took = False
            for _ in range(len(self._ring)):
                if len(batch) >= self._state.max_batch:
                    break
                workflow_id = self._ring.popleft()
                queue = self._queues[workflow_id]
                if queue.may_start():
                    execution_id = queue.pending.popleft()
                    queue.inflight += 1
                    self._inflight[execution_id] = workflow_id
                    batch.append(execution_id)
                    took = True
                if queue.pending:
                    self._ring.append(workflow_id)
                else:
                    self._in_ring.discard(workflow_id)
            if not took:
                break
        return batch

    async def _run_batch(self, batch: list[str]) -> None:
        try:
            outcomes = await execute_batch(workflow.info().workflow_id, batch, self._state.heartbeat_timeout_s)
        except Exception:
            # Only reachable if the activity is cancelled or the retry policy is exhausted;
            # keep the executions and try them again later rather than dropping them.
            workflow.logger.warning("batch of %d failed; retrying later", len(batch))
            outcomes = [Outcome(execution_id, "retry", 30.0) for execution_id in batch]
        self._apply(batch, outcomes)

    def _apply(self, batch: list[str], outcomes: list[Outcome]) -> None:
        self._changes += 1
        now = workflow.now().timestamp()
        for outcome in outcomes:
            workflow_id = self._inflight.pop(outcome.execution_id, None)
            if workflow_id is None:
                continue
            queue = self._queues[workflow_id]
            queue.inflight -= 1
            if outcome.status == "retry":
                queue.retries.append(Retry(outcome.execution_id, now + (outcome.retry_in_s or 1.0)))
            else:  # finished, skipped, or handed off to a workflow that records the outcome itself
                self._finish(queue, outcome.execution_id)
        for execution_id in batch:  # anything the activity did not report is done with
            workflow_id = self._inflight.pop(execution_id, None)
            if workflow_id is not None:
                queue = self._queues[workflow_id]
                queue.inflight -= 1
                self._finish(queue, execution_id)

    def _finish(self, queue: _Queue, execution_id: str) -> None:
        self._open.discard(execution_id)
        if len(self._recent) == self._recent.maxlen:
            evicted = self._recent[0]
            # A re-driven id may be open again while its old entry ages out: forgetting it then
            # would let the next hand-over queue it twice.
            if evicted != execution_id and evicted not in self._open:
                self._known.discard(evicted)
        self._recent.append(execution_id)
        if queue.idle():
            del self._queues[queue.workflow_id]

    def _should_continue_as_new(self) -> bool:
        info = workflow.info()
        return info.is_continue_as_new_suggested() or info.get_current_history_length() > self._state.history_limit

    def _snapshot(self) -> LaneState:
        """The queues (bounded by the hand-over's per-workflow and lane caps) and recent ids."""
        return LaneState(
            lane=self._state.lane,
            max_batch=self._state.max_batch,
            idle_timeout_s=self._state.idle_timeout_s,
            heartbeat_timeout_s=self._state.heartbeat_timeout_s,
            history_limit=self._state.history_limit,
            queues=[
                LaneQueue(q.workflow_id, q.limit, list(q.pending), list(q.retries), q.ordered)
                for q in self._queues.values()
                if q.pending or q.retries
            ],
            recent=list(self._recent)[-_RECENT_CARRIED:],
        )
