"""`hookyard.tick`: what a `schedule.cron` workflow's Temporal Schedule starts at each firing.

The workflow reads the scheduled time Temporal stamps on it (search attribute
`TemporalScheduledStartTime`) and runs one activity that stores an inbox event for the user
workflow, deduplicated on that time. Retries (of the activity, or of the whole tick workflow)
store nothing twice: the inbox is unique on (source type, source id, dedup key). From the inbox
on, a tick is an event like any other: routed, filtered, listed and replayable.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy, SearchAttributeKey

with workflow.unsafe.imports_passed_through():
    from worker.schedule_cron.contract import TICK_ACTIVITY, TICK_WORKFLOW, Tick, TickInput

SCHEDULED_START = SearchAttributeKey.for_datetime("TemporalScheduledStartTime")


def iso(moment: datetime) -> str:
    """A UTC timestamp as stored and shown: `2026-01-31T09:00:00Z` (microseconds only if any)."""
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


@workflow.defn(name=TICK_WORKFLOW)
class TickWorkflow:
    """Stores one tick event; everything else happens in the regular pipeline."""

    @workflow.run
    async def run(self, tick: TickInput) -> bool:
        """Returns whether an event was stored (False if the workflow is gone or inactive)."""
        info = workflow.info()
        scheduled = info.typed_search_attributes.get(SCHEDULED_START)
        stored: bool = await workflow.execute_activity(
            TICK_ACTIVITY,
            Tick(
                workflow_id=tick.workflow_id,
                scheduled_at=iso(scheduled) if scheduled else None,
                fired_at=iso(info.start_time),
                temporal_workflow_id=info.workflow_id,
            ),
            start_to_close_timeout=timedelta(seconds=30),
            # Keeps trying while PostgreSQL is down, within the tick's execution timeout.
            retry_policy=RetryPolicy(initial_interval=timedelta(seconds=1), maximum_interval=timedelta(seconds=30)),
        )
        return stored
