"""`hookyard.gmail_mailbox`: one long-running workflow per watched Gmail mailbox.

Id `gmail-mailbox-<credential id>`. Started or signalled with signal-with-start: by the
dispatcher when pushes for the mailbox are stored (`notify`, carrying the announced history
id), and by the trigger sync hook when a workflow reading the mailbox changes (`reconcile`).

It keeps the highest announced history id, so duplicate and out-of-order pushes cost nothing:
a sync runs only when a push announces more than the last sync reached. Timers renew the watch
daily (Gmail drops watches after 7 days) and sweep every `sweep_interval_s`, which catches
pushes Google dropped. When no active workflow reads the mailbox any more, the reconcile
activity stops the watch and the workflow completes; the next signal starts a fresh run.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError

with workflow.unsafe.imports_passed_through():
    from worker.gmail.contract import (
        DEAD_CREDENTIAL,
        MAILBOX_WORKFLOW,
        NOTIFY_SIGNAL,
        RECONCILE_ACTIVITY,
        RECONCILE_SIGNAL,
        SYNC_ACTIVITY,
        MailboxInput,
        MailboxJob,
        Notify,
        SyncResult,
        WatchResult,
    )

_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=2),
    maximum_interval=timedelta(seconds=60),
    maximum_attempts=5,
)
# Marks histories whose reconciles are followed by a sync (older runs replay without one).
_SYNC_ON_RECONCILE = "sync-on-reconcile"
# After the activity's own retries are spent: wait this long, doubling, before trying again.
_FIRST_BACKOFF_S = 60.0


@workflow.defn(name=MAILBOX_WORKFLOW)
class MailboxWorkflow:
    """Syncs one mailbox when told to, on a timer, and keeps its watch alive."""

    def __init__(self) -> None:
        self._notified = 0
        self._reconcile = False
        self._changes = 0

    @workflow.signal(name=NOTIFY_SIGNAL)
    def notify(self, message: Notify) -> None:
        """A push: the mailbox has reached `history_id` (pushes may come late or twice)."""
        self._notified = max(self._notified, message.history_id)
        self._changes += 1

    @workflow.signal(name=RECONCILE_SIGNAL)
    def reconcile(self) -> None:
        """The workflows reading the mailbox changed: re-check which labels to watch, if any."""
        self._reconcile = True
        self._changes += 1

    @workflow.run
    async def run(self, state: MailboxInput) -> None:
        """Loop until no workflow needs the mailbox, continuing as new before history grows large."""
        self._notified = max(self._notified, state.notified_history_id)
        self._reconcile = self._reconcile or state.reconcile
        job = MailboxJob(state.owner_id, state.credential_id)
        cursor, handled = state.cursor, state.cursor
        watch_due, sweep_due = state.watch_due, state.sweep_due
        sync_failures = watch_failures = 0
        sync_retry_at = 0.0
        while True:
            # Signals that arrive while an activity runs must wake the wait below, not be missed.
            seen = self._changes
            now = workflow.now().timestamp()
            if self._reconcile or now >= watch_due:
                reconciling, self._reconcile = self._reconcile, False
                try:
                    watch = await self._reconcile_watch(job)
                except ActivityError as exc:
                    if _dead(exc):
                        if await self._ended(state):
                            return
                        continue
                    watch_failures += 1
                    watch_due = now + _backoff(watch_failures, state.watch_renew_s)
                    workflow.logger.warning("mailbox %s: watch failed: %s", state.credential_id, _cause(exc))
                else:
                    watch_failures = 0
                    if not watch.active:
                        await workflow.wait_condition(workflow.all_handlers_finished)
                        if self._reconcile:
                            continue  # re-activated while stopping
                        return
                    watch_due = now + state.watch_renew_s
                    if reconciling and workflow.patched(_SYNC_ON_RECONCILE):
                        # The workflows reading the mailbox changed (e.g. resumed by a reconnect):
                        # read what arrived meanwhile now, from the cursor, not at the next sweep.
                        sweep_due = min(sweep_due, now)
            if (self._notified > handled and now >= sync_retry_at) or now >= sweep_due:
                announced = self._notified
                try:
                    synced = await self._sync(job)
                except ActivityError as exc:
                    if _dead(exc):
                        if await self._ended(state):
                            return
                        continue
                    sync_failures += 1
                    sync_retry_at = now + _backoff(sync_failures, state.sweep_interval_s)
                    sweep_due = max(sweep_due, sync_retry_at)
                    workflow.logger.warning("mailbox %s: sync failed: %s", state.credential_id, _cause(exc))
                else:
                    sync_failures, sync_retry_at = 0, 0.0
                    cursor = max(cursor, synced.cursor)
                    # What was announced before the sync started is covered by it, even if
                    # Gmail's history id lags the push that announced it.
                    handled = max(cursor, announced)
                    sweep_due = workflow.now().timestamp() + state.sweep_interval_s
            if self._history_full(state):
                await workflow.wait_condition(workflow.all_handlers_finished)
                workflow.continue_as_new(
                    MailboxInput(
                        owner_id=state.owner_id,
                        credential_id=state.credential_id,
                        sweep_interval_s=state.sweep_interval_s,
                        watch_renew_s=state.watch_renew_s,
                        history_limit=state.history_limit,
                        notified_history_id=self._notified,
                        cursor=handled,
                        reconcile=self._reconcile,
                        watch_due=watch_due,
                        sweep_due=sweep_due,
                    )
                )
            due = [watch_due, sweep_due]
            if self._notified > handled:
                due.append(sync_retry_at)
            timeout = max(0.0, min(due) - workflow.now().timestamp())
            if timeout > 0:
                with contextlib.suppress(TimeoutError):
                    await workflow.wait_condition(self._changed_since(seen), timeout=timeout)

    async def _ended(self, state: MailboxInput) -> bool:
        """The credential is dead: end (a reconnect starts a new run) unless told to reconcile meanwhile."""
        workflow.logger.warning("mailbox %s: credential needs reconnecting; mailbox stopped", state.credential_id)
        await workflow.wait_condition(workflow.all_handlers_finished)
        return not self._reconcile

    def _changed_since(self, seen: int) -> Callable[[], bool]:
        return lambda: self._changes != seen

    def _history_full(self, state: MailboxInput) -> bool:
        info = workflow.info()
        return info.is_continue_as_new_suggested() or info.get_current_history_length() > state.history_limit

    async def _reconcile_watch(self, job: MailboxJob) -> WatchResult:
        result: WatchResult = await workflow.execute_activity(
            RECONCILE_ACTIVITY,
            job,
            result_type=WatchResult,
            start_to_close_timeout=timedelta(minutes=2),
            retry_policy=_RETRY,
        )
        return result

    async def _sync(self, job: MailboxJob) -> SyncResult:
        result: SyncResult = await workflow.execute_activity(
            SYNC_ACTIVITY,
            job,
            result_type=SyncResult,
            start_to_close_timeout=timedelta(minutes=15),
            heartbeat_timeout=timedelta(minutes=2),
            retry_policy=_RETRY,
        )
        return result


def _backoff(failures: int, ceiling: float) -> float:
    return min(_FIRST_BACKOFF_S * float(2 ** min(failures - 1, 10)), max(ceiling, _FIRST_BACKOFF_S))


def _dead(exc: ActivityError) -> bool:
    """Whether the activity failed because the mailbox's credential needs reconnecting."""
    cause = exc.cause
    return isinstance(cause, ApplicationError) and cause.type in DEAD_CREDENTIAL


def _cause(exc: ActivityError) -> str:
    return str(exc.cause or exc)[:300]
