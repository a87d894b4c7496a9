"""`hookyard.tick`: what a `schedule.cron` workflow's Temporal Schedule starts at each firing.

The workflow reads the scheduled time Temporal stamps on it (search attribute
`TemporalScheduledStartTime`) and runs one activity that stores an inbox event for the user
workflow, deduplicated on that time. Retries (of the activity, or of the whole tick workflow)
store nothing twice: the inbox is unique on (source type, source id, dedup key). From the inbox
on, a tick is an event like any other: routed, filtered, listed and replayable.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from uuid import UUID

from temporalio import activity, workflow
from temporalio.common import RetryPolicy, SearchAttributeKey

with workflow.unsafe.imports_passed_through():
    import asyncpg
    import orjson

    from schemas.store.events import NewEvent, insert_events
    from schemas.store.trigger_sync import trigger_of
    from triggers.schedule import NAME, SOURCE_TYPE, TICK_ACTIVITY, TICK_WORKFLOW, TickInput, schedule_id

SCHEDULED_START = SearchAttributeKey.for_datetime("TemporalScheduledStartTime")


@dataclass
class Tick:
    """Activity input: one firing of a workflow's schedule."""

    workflow_id: str
    scheduled_at: str | None
    fired_at: str
    temporal_workflow_id: str


def iso(moment: datetime) -> str:
    """A UTC timestamp as stored and shown: `2026-01-31T09:00:00Z` (microseconds only if any)."""
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def dedup_key(tick: Tick) -> str:
    """One event per scheduled time; without one (never seen in practice), one per tick workflow."""
    return f"scheduled:{tick.scheduled_at}" if tick.scheduled_at else f"temporal:{tick.temporal_workflow_id}"


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


class TickActivities:
    """The tick activity, with the pool it writes through."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    @activity.defn(name=TICK_ACTIVITY)
    async def record_tick(self, tick: Tick) -> bool:
        """Store the tick as an inbox event unless the workflow is gone, inactive or changed type."""
        async with self._pool.acquire() as conn:
            row = await trigger_of(conn, UUID(tick.workflow_id))
            if row is None or row["trigger_type"] != NAME or not row["active"]:
                activity.logger.info("tick for workflow %s skipped: not an active schedule", tick.workflow_id)
                return False
            payload = row["trigger_config"].get("payload")
            body = {"scheduled_at": tick.scheduled_at, "fired_at": tick.fired_at, "payload": payload}
            event = NewEvent(
                owner_id=row["owner_id"],
                source_type=SOURCE_TYPE,
                source_id=str(row["id"]),
                dedup_key=dedup_key(tick),
                headers={},
                body=orjson.dumps(body),
                verification={
                    "verified": True,
                    "source": "temporal-schedule",
                    "schedule_id": schedule_id(row["id"]),
                    "temporal_workflow_id": tick.temporal_workflow_id,
                },
            )
            await insert_events(conn, [event])
        return True
