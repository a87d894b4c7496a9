"""The automation workflow: one long-running workflow per user workflow.

The dispatcher signals-with-start it with batches of execution ids. It runs them in batches
(one activity per batch, not per execution: Temporal round trips are the bottleneck), keeps at
most `concurrency_limit` executions in flight, schedules retries with durable timers, and
continues-as-new before its history grows large. Idle for `idle_timeout_s`, it completes; the
next signal-with-start begins a fresh run.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Callable
from datetime import timedelta

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from worker.automation.contract import (
        ENQUEUE_SIGNAL,
        WORKFLOW_NAME,
        WORKFLOW_TASK_TIMEOUT_S,
        AutomationState,
        Enqueue,
        Outcome,
        Retry,
        execute_batch,
    )

_RECENT_KEPT = 2000


@workflow.defn(name=WORKFLOW_NAME)
class AutomationWorkflow:
    """Runs a user workflow's executions as they are signalled in."""

    def __init__(self) -> None:
        self._state = AutomationState(workflow_id="")
        self._pending: deque[str] = deque()
        self._retries: list[Retry] = []
        self._inflight: set[str] = set()
        self._recent: deque[str] = deque(maxlen=_RECENT_KEPT)
        self._known: set[str] = set()
        self._tasks: set[asyncio.Future[None]] = set()
        self._changes = 0  # bumped by every signal and finished batch; wakes the main loop

    @workflow.signal(name=ENQUEUE_SIGNAL)
    def enqueue(self, message: Enqueue) -> None:
        """Accept executions; ids seen before (re-sent after a dispatcher crash) are ignored."""
        self._state.concurrency_limit = max(1, message.concurrency_limit)
        self._changes += 1
        redrive = set(message.redrive)
        for execution_id in message.execution_ids:
            if execution_id not in self._known:
                self._known.add(execution_id)
                self._pending.append(execution_id)
            elif execution_id in redrive and self._finished(execution_id):
                self._pending.append(execution_id)

    def _finished(self, execution_id: str) -> bool:
        """Known, but neither pending, in flight nor waiting for a retry."""
        return (
            execution_id not in self._inflight
            and execution_id not in self._pending
            and all(r.execution_id != execution_id for r in self._retries)
        )

    @workflow.run
    async def run(self, state: AutomationState) -> None:
        """Loop until idle or until history asks for a fresh run."""
        self._restore(state)
        idle_since = workflow.now().timestamp()
        while True:
            self._release_due_retries()
            self._start_batches()
            if self._busy():
                idle_since = workflow.now().timestamp()
            if self._should_continue_as_new():
                await workflow.wait_condition(lambda: not self._inflight)
                await workflow.wait_condition(workflow.all_handlers_finished)
                workflow.continue_as_new(self._snapshot(), task_timeout=timedelta(seconds=WORKFLOW_TASK_TIMEOUT_S))
            timeout = self._next_wake(idle_since)
            if timeout is not None and timeout <= 0:
                if not self._busy():
                    await workflow.wait_condition(workflow.all_handlers_finished)
                    return
                continue  # a retry is due now
            with contextlib.suppress(TimeoutError):
                await workflow.wait_condition(self._changed_since(self._changes), timeout=timeout)

    def _changed_since(self, seen: int) -> Callable[[], bool]:
        return lambda: self._changes != seen

    def _restore(self, state: AutomationState) -> None:
        # Signals may already have been handled before run() starts (signal-with-start).
        early = list(self._pending)
        self._state = state
        self._pending = deque(state.pending)
        self._retries = list(state.retries)
        self._recent = deque(state.recent, maxlen=_RECENT_KEPT)
        self._known = set(self._pending) | {r.execution_id for r in self._retries} | set(self._recent)
        for execution_id in early:
            if execution_id not in self._known:
                self._known.add(execution_id)
                self._pending.append(execution_id)

    def _busy(self) -> bool:
        return bool(self._pending or self._inflight or self._retries)

    def _free_slots(self) -> int:
        return self._state.concurrency_limit - len(self._inflight)

    def _release_due_retries(self) -> None:
        now = workflow.now().timestamp()
        due = [r for r in self._retries if r.due <= now]
        if due:
            self._retries = [r for r in self._retries if r.due > now]
            self._pending.extend(r.execution_id for r in due)

    def _next_wake(self, idle_since: float) -> float | None:
        now = workflow.now().timestamp()
        if self._retries:
            return max(0.0, min(r.due for r in self._retries) - now)
        if self._pending or self._inflight:
            return None  # woken by a batch finishing or a signal
        return idle_since + self._state.idle_timeout_s - now

    def _start_batches(self) -> None:
        while self._pending and self._free_slots() > 0:
            size = min(len(self._pending), self._free_slots(), self._state.max_batch)
            batch = [self._pending.popleft() for _ in range(size)]
            self._inflight.update(batch)
            task = asyncio.ensure_future(self._run_batch(batch))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _run_batch(self, batch: list[str]) -> None:
        try:
            outcomes = await execute_batch(self._state.workflow_id, batch, self._state.heartbeat_timeout_s)
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
            self._inflight.discard(outcome.execution_id)
            if outcome.status == "retry":
                self._retries.append(Retry(outcome.execution_id, now + (outcome.retry_in_s or 1.0)))
            else:  # finished, skipped, or handed off to a workflow that records the outcome itself
                self._finish(outcome.execution_id)
        for execution_id in batch:  # anything the activity did not report is done with
            if execution_id in self._inflight:
                self._inflight.discard(execution_id)
                self._finish(execution_id)

    def _finish(self, execution_id: str) -> None:
        if len(self._recent) == self._recent.maxlen:
            evicted = self._recent[0]
            # A re-driven id may be pending, in flight or retrying again while its old entry
            # ages out: forgetting it then would let the next hand-over queue it twice.
            if evicted != execution_id and self._finished(evicted):
                self._known.discard(evicted)
        self._recent.append(execution_id)

    def _should_continue_as_new(self) -> bool:
        info = workflow.info()
        return info.is_continue_as_new_suggested() or info.get_current_history_length() > self._state.history_limit

    def _snapshot(self) -> AutomationState:
        return AutomationState(
            workflow_id=self._state.workflow_id,
            concurrency_limit=self._state.concurrency_limit,
            max_batch=self._state.max_batch,
            idle_timeout_s=self._state.idle_timeout_s,
            heartbeat_timeout_s=self._state.heartbeat_timeout_s,
            history_limit=self._state.history_limit,
            pending=list(self._pending),
            retries=list(self._retries),
            recent=list(self._recent)[-500:],
        )
