"""Internal inbox sources: events for hookyard itself rather than for owners' workflows.

A Gmail push does not fire a user workflow; it tells a mailbox's sync workflow that there is
new mail. Such sources register a forwarder, and the dispatcher treats them in its two steps
like executions:

1. resolve: `accept` takes the claimed events in the resolve transaction and records what
   they ask for durably (a mailbox's pending push); the events are marked dispatched (or
   unmatched when nothing wants them) in the same transaction.
2. hand over: `handover` signals Temporal for what is pending and marks it signalled. A crash
   in between signals again, which the receiving workflows treat as harmless.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Protocol
from uuid import UUID

import asyncpg
from temporalio.client import Client

from schemas.store import events as event_store
from settings import Settings
from triggers.base import InboxEvent
from triggers.registry import internal_sources
from worker.gmail.forwarder import GmailPushForwarder


class ForwardFailed(RuntimeError):
    """Some signals could not be delivered; what was pending stays pending and is retried."""


class SourceForwarder(Protocol):
    """Forwards the events of one internal source type to a long-running workflow."""

    source_type: str

    async def accept(self, conn: asyncpg.Connection, events: Sequence[InboxEvent]) -> list[bool]:
        """Record what the events ask for (same transaction as the claim); True where something wants it."""
        ...

    async def handover(
        self, pool: asyncpg.Pool, connect: Callable[[], Awaitable[Client]], limit: int
    ) -> tuple[int, list[BaseException]]:
        """Signal what is pending and mark what was signalled: (how many were pending, failures).

        `connect` is called only when something is pending, so an idle source never needs Temporal.
        """
        ...


class NoForwarder(RuntimeError):
    """A trigger type declares an internal source that no forwarder of the dispatcher serves."""


def build_forwarders(
    settings: Settings, available: Sequence[SourceForwarder] | None = None
) -> dict[str, SourceForwarder]:
    """The forwarder of every internal source trigger types declare, by source type.

    `available` are the forwarders this dispatcher has (by default, each capability's). Raises
    `NoForwarder` for a declared source none of them serves: its events would otherwise be
    matched against owners' workflows instead of reaching hookyard's own.
    """
    forwarders = [GmailPushForwarder(settings)] if available is None else available
    served = {f.source_type: f for f in forwarders}
    declared = internal_sources()
    missing = sorted(declared - set(served))
    if missing:
        raise NoForwarder(f"no forwarder serves the internal source {', '.join(missing)}")
    return {source: served[source] for source in sorted(declared)}


async def accept_forwarded(
    conn: asyncpg.Connection, forwarders: Mapping[str, SourceForwarder], events: Sequence[InboxEvent]
) -> set[UUID]:
    """Resolve the claimed events of internal sources; returns their ids (the rest go to triggers)."""
    groups: dict[str, list[InboxEvent]] = defaultdict(list)
    for event in events:
        if event.source_type in forwarders:
            groups[event.source_type].append(event)
    ids: list[UUID] = []
    statuses: list[str] = []
    for source_type, group in groups.items():
        wanted = await forwarders[source_type].accept(conn, group)
        ids += [e.id for e in group]
        statuses += ["dispatched" if w else "unmatched" for w in wanted]
    if ids:
        await event_store.mark_resolved(conn, ids, statuses, [[] for _ in ids])
    return set(ids)


async def handover_forwarded(
    pool: asyncpg.Pool,
    connect: Callable[[], Awaitable[Client]],
    forwarders: Mapping[str, SourceForwarder],
    limit: int,
) -> int:
    """Hand over what every internal source has pending; returns how many were pending."""
    pending = 0
    failures: list[BaseException] = []
    for forwarder in forwarders.values():
        count, failed = await forwarder.handover(pool, connect, limit)
        pending += count
        failures += failed
    if failures:
        raise ForwardFailed(f"{len(failures)} forwarding signals failed: {failures[0]!r}")
    return pending
