"""What the `hookyard.tick` workflow passes to its activity: ids and times, never data."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Tick:
    """Activity input: one firing of a workflow's schedule."""

    workflow_id: str
    scheduled_at: str | None
    fired_at: str
    temporal_workflow_id: str
