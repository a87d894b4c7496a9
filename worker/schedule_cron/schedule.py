"""The dispatcher's side of `schedule.cron`: each workflow's Temporal Schedule, kept in step with its row.

The trigger sync loop (worker/dispatch/trigger_sync.py) calls `sync_schedule` after every change
of a workflow's trigger, config, active flag or deletion: it creates, updates, pauses or deletes
the Schedule, idempotently. Each firing starts the `hookyard.tick` workflow (workflow.py).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import timedelta
from typing import Any
from uuid import UUID

from temporalio.client import (
    Schedule,
    ScheduleActionStartWorkflow,
    ScheduleAlreadyRunningError,
    ScheduleHandle,
    ScheduleIntervalSpec,
    ScheduleOverlapPolicy,
    SchedulePolicy,
    ScheduleSpec,
    ScheduleState,
    ScheduleUpdate,
    ScheduleUpdateInput,
)
from temporalio.common import RetryPolicy
from temporalio.service import RPCError, RPCStatusCode

from triggers.base import SyncHook, TriggerSyncContext, TriggerSyncError, WorkflowSyncState
from triggers.schedule import DEFAULT_CATCHUP_WINDOW_S, NAME
from worker.schedule_cron.contract import TICK_WORKFLOW, TickInput, schedule_id, tick_workflow_id

OVERLAP = {
    "skip": ScheduleOverlapPolicy.SKIP,
    "buffer_one": ScheduleOverlapPolicy.BUFFER_ONE,
    "allow_all": ScheduleOverlapPolicy.ALLOW_ALL,
}

# Bounds how long one tick may keep retrying its insert (and, with overlap `skip`, hold back
# the next firing) while PostgreSQL is unreachable.
TICK_TIMEOUT = timedelta(minutes=15)


def build_schedule(workflow_id: UUID, config: Mapping[str, Any], task_queue: str, *, paused: bool) -> Schedule:
    """The Temporal Schedule that fires this workflow's ticks."""
    spec = ScheduleSpec(
        time_zone_name=config.get("timezone", "UTC"),
        jitter=timedelta(seconds=config.get("jitter_s", 0)) or None,
    )
    if "cron" in config:
        spec.cron_expressions = [config["cron"].strip()]
    else:
        spec.intervals = [ScheduleIntervalSpec(every=timedelta(seconds=config["interval_s"]))]
    action = ScheduleActionStartWorkflow(
        TICK_WORKFLOW,
        TickInput(workflow_id=str(workflow_id)),
        id=tick_workflow_id(workflow_id),
        task_queue=task_queue,
        execution_timeout=TICK_TIMEOUT,
        retry_policy=RetryPolicy(maximum_attempts=3),
    )
    policy = SchedulePolicy(
        overlap=OVERLAP[config.get("overlap", "skip")],
        catchup_window=timedelta(seconds=config.get("catchup_window_s", DEFAULT_CATCHUP_WINDOW_S)),
    )
    return Schedule(action=action, spec=spec, policy=policy, state=ScheduleState(paused=paused))


async def sync_schedule(ctx: TriggerSyncContext, state: WorkflowSyncState) -> None:
    """Converge the workflow's Temporal Schedule to its row: create, update, pause or delete."""
    handle = ctx.temporal.get_schedule_handle(schedule_id(state.id))
    try:
        if state.deleted:
            await _delete(handle)
            return
        schedule = build_schedule(state.id, state.trigger_config, ctx.settings.task_queue, paused=not state.active)
        try:
            await ctx.temporal.create_schedule(handle.id, schedule)
            return
        except ScheduleAlreadyRunningError:
            pass

        def replace(_: ScheduleUpdateInput) -> ScheduleUpdate:
            return ScheduleUpdate(schedule=schedule)

        await handle.update(replace)
        # Pausing is schedule state, which an update may leave as it was: set it explicitly.
        described = await handle.describe()
        if described.schedule.state.paused and state.active:
            await handle.unpause()
        elif not described.schedule.state.paused and not state.active:
            await handle.pause()
    except RPCError as exc:
        if exc.status == RPCStatusCode.INVALID_ARGUMENT:
            # The definition itself is the problem; retrying the same one will not help.
            raise TriggerSyncError(f"Temporal refused the schedule: {exc.message[:300]}") from None
        raise


async def _delete(handle: ScheduleHandle) -> None:
    try:
        await handle.delete()
    except RPCError as exc:
        if exc.status != RPCStatusCode.NOT_FOUND:
            raise


# The trigger types whose outside state this capability keeps (see worker/dispatch/trigger_sync.py).
SYNC_HOOKS: Mapping[str, SyncHook] = {NAME: sync_schedule}
