"""The tick activity: stores one firing of a `schedule.cron` workflow's Schedule as an inbox event."""

from __future__ import annotations

from uuid import UUID

import asyncpg
import orjson
from temporalio import activity

from schemas.store.events import NewEvent, insert_events
from schemas.store.trigger_sync import trigger_of
from triggers.schedule import NAME, SOURCE_TYPE
from worker.schedule_cron.contract import TICK_ACTIVITY, Tick, schedule_id


def dedup_key(tick: Tick) -> str:
    """One event per scheduled time; without one (never seen in practice), one per tick workflow."""
    return f"scheduled:{tick.scheduled_at}" if tick.scheduled_at else f"temporal:{tick.temporal_workflow_id}"


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
