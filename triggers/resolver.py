"""Event -> candidate workflows, cached in-process and invalidated by a version counter.

The cache maps (trigger type, routing key) to the active workflows on that key, so resolving
costs one dictionary lookup whatever the number of workflows. Every claim compares the
database's `cache_versions` counter (bumped by a trigger on any workflow change) and drops the
cache when it moved, so a replica never acts on a stale definition.
"""

from __future__ import annotations

import asyncpg

from schemas.store import workflows as store
from schemas.store.workflows import WorkflowSpec
from triggers.base import InboxEvent, TriggerType
from triggers.registry import for_source


class RoutingCache:
    """Active workflows per routing key, for one process."""

    def __init__(self) -> None:
        self._version: int | None = None
        self._routes: dict[tuple[str, str], list[WorkflowSpec]] = {}

    async def sync(self, conn: asyncpg.Connection) -> None:
        """Drop everything if workflows changed since the last look."""
        version = await store.routing_version(conn)
        if version != self._version:
            self._routes.clear()
            self._version = version

    async def candidates(self, conn: asyncpg.Connection, event: InboxEvent) -> list[tuple[TriggerType, WorkflowSpec]]:
        """Workflows whose trigger listens where this event came from (filters not yet applied)."""
        found: list[tuple[TriggerType, WorkflowSpec]] = []
        for trigger in for_source(event.source_type):
            key = (trigger.name, event.source_id)
            specs = self._routes.get(key)
            if specs is None:
                specs = await store.active_for_route(conn, trigger.name, event.source_id)
                self._routes[key] = specs
            found.extend((trigger, spec) for spec in specs if spec.owner_id == event.owner_id)
        return found
