"""Names and inputs of the `hookyard.tick` workflow and its activity: ids and times, never data.

A `schedule.cron` workflow owns one Temporal Schedule (`schedule-<workflow id>`), which starts
a tick workflow (`tick-<workflow id>` plus the scheduled time) at each firing.
"""

from __future__ import annotations

from dataclasses import dataclass
from uuid import UUID

TICK_WORKFLOW = "hookyard.tick"
TICK_ACTIVITY = "hookyard.record_tick"


@dataclass
class TickInput:
    """Input of the `hookyard.tick` workflow: only the id, the rest stays in PostgreSQL."""

    workflow_id: str


def schedule_id(workflow_id: UUID | str) -> str:
    """Temporal Schedule id of a workflow (no names or data in it)."""
    return f"schedule-{workflow_id}"


def tick_workflow_id(workflow_id: UUID | str) -> str:
    """Id prefix of the tick workflows; Temporal appends the scheduled time to it."""
    return f"tick-{workflow_id}"


@dataclass
class Tick:
    """Activity input: one firing of a workflow's schedule."""

    workflow_id: str
    scheduled_at: str | None
    fired_at: str
    temporal_workflow_id: str
