"""The event inbox: durable, deduplicated records of accepted requests."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from uuid import UUID

import asyncpg
import orjson

from schemas.errors import NotFound
from schemas.store.rows import row_of, rows_of

EVENTS_CHANNEL = "hookyard_events"


@dataclass(frozen=True, slots=True)
class NewEvent:
    """A verified request, ready to be stored."""

    owner_id: UUID
    source_type: str
    source_id: str
    dedup_key: str
    headers: dict[str, str]
    body: bytes
    verification: dict[str, Any] = field(default_factory=dict)

    @property
    def key(self) -> tuple[str, str, str]:
        """The deduplication identity of the event."""
        return (self.source_type, self.source_id, self.dedup_key)


@dataclass(frozen=True, slots=True)
class Stored:
    """Where an event landed: its id, and whether it had been stored before."""

    event_id: UUID
    duplicate: bool


_INSERT = """
INSERT INTO events (owner_id, source_type, source_id, dedup_key, headers, body, verification)
SELECT * FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::jsonb[], $6::bytea[], $7::jsonb[])
ON CONFLICT (source_type, source_id, dedup_key) DO UPDATE
    SET duplicate_count = events.duplicate_count + 1, last_duplicate_at = now()
RETURNING id, source_type, source_id, dedup_key, (xmax <> 0) AS duplicate
"""


async def insert_events(conn: asyncpg.Connection, events: Sequence[NewEvent]) -> dict[tuple[str, str, str], Stored]:
    """Store many events in one statement and one commit; keys must be distinct.

    A key already present counts a duplicate delivery instead of storing it again. The
    dispatcher is notified when the transaction commits.
    """
    async with conn.transaction():
        rows = await conn.fetch(
            _INSERT,
            [e.owner_id for e in events],
            [e.source_type for e in events],
            [e.source_id for e in events],
            [e.dedup_key for e in events],
            [e.headers for e in events],
            [e.body for e in events],
            [e.verification for e in events],
        )
        await conn.execute("SELECT pg_notify($1, '')", EVENTS_CHANNEL)
    return {(r["source_type"], r["source_id"], r["dedup_key"]): Stored(r["id"], r["duplicate"]) for r in rows}


async def claim_received(conn: asyncpg.Connection, limit: int, *, only: UUID | None = None) -> list[asyncpg.Record]:
    """Lock a batch of undispatched events; other dispatchers skip them (call inside a transaction).

    With `only`, just that event, if it is still waiting.
    """
    columns = "SELECT id, owner_id, source_type, source_id, headers, body, received_at FROM events "
    if only is not None:
        one: list[asyncpg.Record] = await conn.fetch(
            columns + "WHERE id = $1 AND status = 'received' FOR UPDATE SKIP LOCKED", only
        )
        return one
    rows: list[asyncpg.Record] = await conn.fetch(
        columns + "WHERE status = 'received' ORDER BY seq LIMIT $1 FOR UPDATE SKIP LOCKED",
        limit,
    )
    return rows


async def mark_resolved(
    conn: asyncpg.Connection,
    ids: list[UUID],
    statuses: list[str],
    resolutions: list[list[dict[str, Any]]],
    notes: list[str | None] | None = None,
) -> None:
    """Record each event's outcome and the reasoning behind it (and a note where unusual)."""
    await conn.execute(
        "UPDATE events e SET status = u.status, resolution = u.resolution::jsonb, note = u.note, "
        "dispatched_at = now() "
        "FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[]) AS u(id, status, resolution, note) "
        "WHERE e.id = u.id",
        ids,
        statuses,
        # Sent as JSON text: asyncpg would read a list of lists as a two-dimensional array.
        [orjson.dumps(r).decode() for r in resolutions],
        [None] * len(ids) if notes is None else notes,
    )


async def mark_rejected(conn: asyncpg.Connection, event_id: UUID, reason: str) -> bool:
    """Mark a still-waiting event `rejected` (terminal) with the reason; False if it was not waiting."""
    status: str = await conn.execute(
        "UPDATE events SET status = 'rejected', note = $2, resolution = '[]'::jsonb, dispatched_at = now() "
        "WHERE id = $1 AND status = 'received'",
        event_id,
        reason,
    )
    return status == "UPDATE 1"


@dataclass(frozen=True, slots=True)
class Event:
    """A stored event as its owner may see it; `body` is read by `get_event` only."""

    id: UUID
    seq: int
    source_type: str
    source_id: str
    dedup_key: str
    received_at: datetime
    headers: dict[str, Any]
    status: str
    verification: dict[str, Any]
    duplicate_count: int
    last_duplicate_at: datetime | None
    resolution: Any
    note: str | None
    dispatched_at: datetime | None
    body_size: int
    body: bytes | None = None


_EVENT_COLUMNS = (
    "id, seq, source_type, source_id, dedup_key, received_at, headers, status, verification, "
    "duplicate_count, last_duplicate_at, resolution, note, dispatched_at, octet_length(body) AS body_size"
)


async def list_events(
    conn: asyncpg.Connection,
    owner_id: UUID,
    *,
    limit: int,
    after_seq: int | None = None,
    status: str | None = None,
    source_id: str | None = None,
) -> list[Event]:
    """A page of the owner's events, newest first (limit+1 rows)."""
    rows = await conn.fetch(
        f"SELECT {_EVENT_COLUMNS} FROM events WHERE owner_id = $1 "
        "AND ($2::bigint IS NULL OR seq < $2) AND ($3::text IS NULL OR status = $3) "
        "AND ($4::text IS NULL OR source_id = $4) ORDER BY seq DESC LIMIT $5",
        owner_id,
        after_seq,
        status,
        source_id,
        limit + 1,
    )
    return rows_of(Event, rows)


async def get_event(conn: asyncpg.Connection, owner_id: UUID, event_id: UUID) -> Event:
    """One of the owner's events, body included; `NotFound` if the owner has no such event."""
    row = await conn.fetchrow(
        f"SELECT {_EVENT_COLUMNS}, body FROM events WHERE id = $1 AND owner_id = $2", event_id, owner_id
    )
    if row is None:
        raise NotFound("event")
    return row_of(Event, row)


async def pick_event_ids(
    conn: asyncpg.Connection,
    owner_id: UUID,
    *,
    ids: Sequence[UUID] | None = None,
    since: datetime | None = None,
    limit: int,
) -> list[UUID]:
    """The owner's events a dry run looks at, without their bodies.

    With `ids`, those of them that exist and are the owner's, in the order given (another
    owner's id is indistinguishable from an unknown one); otherwise the newest `limit`,
    received at or after `since` when given.
    """
    if ids is not None:
        rows = await conn.fetch(
            "SELECT e.id FROM unnest($2::uuid[]) WITH ORDINALITY AS wanted(id, n) "
            "JOIN events e ON e.id = wanted.id AND e.owner_id = $1 ORDER BY wanted.n LIMIT $3",
            owner_id,
            list(ids),
            limit,
        )
    else:
        rows = await conn.fetch(
            "SELECT id FROM events WHERE owner_id = $1 AND ($2::timestamptz IS NULL OR received_at >= $2) "
            "ORDER BY seq DESC LIMIT $3",
            owner_id,
            since,
            limit,
        )
    return [row["id"] for row in rows]


@dataclass(frozen=True, slots=True)
class EventSummary:
    """Where an event came from, when, and its status; no body."""

    id: UUID
    source_type: str
    source_id: str
    received_at: datetime
    status: str


@dataclass(frozen=True, slots=True)
class EventWithBody:
    """An event as a trigger reads it, with its status."""

    id: UUID
    owner_id: UUID
    source_type: str
    source_id: str
    headers: dict[str, str]
    body: bytes
    received_at: datetime
    status: str


async def events_with_bodies(conn: asyncpg.Connection, owner_id: UUID, ids: Sequence[UUID]) -> list[EventWithBody]:
    """The owner's events with these ids, bodies included, in the order of `ids`."""
    rows = await conn.fetch(
        "SELECT e.id, e.owner_id, e.source_type, e.source_id, e.headers, e.body, e.received_at, e.status "
        "FROM unnest($2::uuid[]) WITH ORDINALITY AS wanted(id, n) "
        "JOIN events e ON e.id = wanted.id AND e.owner_id = $1 ORDER BY wanted.n",
        owner_id,
        list(ids),
    )
    return rows_of(EventWithBody, rows)


async def event_summaries(conn: asyncpg.Connection, owner_id: UUID, ids: Sequence[UUID]) -> list[EventSummary]:
    """Id, source, time and status (no bodies) of the owner's events with these ids, in that order."""
    rows = await conn.fetch(
        "SELECT e.id, e.source_type, e.source_id, e.received_at, e.status "
        "FROM unnest($2::uuid[]) WITH ORDINALITY AS wanted(id, n) "
        "JOIN events e ON e.id = wanted.id AND e.owner_id = $1 ORDER BY wanted.n",
        owner_id,
        list(ids),
    )
    return rows_of(EventSummary, rows)
