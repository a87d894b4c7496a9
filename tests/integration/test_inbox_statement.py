"""The inbox's group commit is one autocommit statement, and its connections skip the reset.

Each flush of `ingest/inbox.py` is one round trip: the insert and the NOTIFY that wakes the
dispatcher are folded into one statement (`schemas.store.events.insert_events`), so there is
no BEGIN/COMMIT around it, and the inbox's own pool releases connections without the reset
query (nothing on them holds session state). These tests pin what that must keep: the rows,
the duplicate answers, and exactly one notification per stored batch.
"""

from __future__ import annotations

import asyncio
import uuid

import asyncpg
import pytest
from starlette.responses import JSONResponse

from ingest.hooks import stored_response
from ingest.inbox import InboxWriter
from schemas import db
from schemas.store.events import EVENTS_CHANNEL, NewEvent, Stored, insert_events
from schemas.store.owners import create_owner
from tests.conftest import Stack

pytestmark = pytest.mark.integration


def _event(owner_id: uuid.UUID, key: str) -> NewEvent:
    return NewEvent(owner_id, "webhook", f"inbox-{owner_id}", key, {"x-kind": "test"}, b'{"n": 1}', {"verified": True})


async def _notifications(stack: Stack) -> tuple[asyncpg.Connection, list[str]]:
    listener = await db.connect(stack.database_url)
    got: list[str] = []
    await listener.add_listener(EVENTS_CHANNEL, lambda *args: got.append(args[-1]))
    return listener, got


async def test_one_statement_stores_the_batch_and_notifies_once_when_it_commits(
    stack: Stack, pool: asyncpg.Pool
) -> None:
    listener, got = await _notifications(stack)
    try:
        async with pool.acquire() as conn:
            owner_id, _ = await create_owner(conn, "inbox")
            stored = await insert_events(conn, [_event(owner_id, "a"), _event(owner_id, "b")])
            assert not conn.is_in_transaction()
            again = await insert_events(conn, [_event(owner_id, "a")])
        await asyncio.sleep(0.3)
    finally:
        await listener.close()
    assert [s.duplicate for s in stored.values()] == [False, False]
    assert next(iter(again.values())) == Stored(stored[("webhook", f"inbox-{owner_id}", "a")].event_id, True)
    assert got == ["", ""]  # one per statement, not one per row


async def test_inside_a_transaction_the_notification_waits_for_its_commit(stack: Stack, pool: asyncpg.Pool) -> None:
    listener, got = await _notifications(stack)
    try:
        async with pool.acquire() as conn:
            owner_id, _ = await create_owner(conn, "inbox-tx")
            tx = conn.transaction()
            await tx.start()
            await insert_events(conn, [_event(owner_id, "c")])
            await asyncio.sleep(0.3)
            before_commit = list(got)
            await tx.rollback()
        await asyncio.sleep(0.3)
        async with pool.acquire() as conn:
            rows = await conn.fetchval("SELECT count(*) FROM events WHERE source_id = $1", f"inbox-{owner_id}")
    finally:
        await listener.close()
    assert before_commit == [] and got == [] and rows == 0


async def test_the_inbox_pool_without_reset_stores_many_concurrent_events_each_once(stack: Stack) -> None:
    inbox_pool = await db.create_pool(stack.database_url, min_size=2, max_size=2, reset_on_release=False)
    inbox = InboxWriter(inbox_pool, flushers=2)
    try:
        async with inbox_pool.acquire() as conn:
            owner_id, _ = await create_owner(conn, "inbox-pool")
        keys = [f"k{n % 150}" for n in range(300)]  # every key twice: one stored, one duplicate
        results = await asyncio.gather(*(inbox.store(_event(owner_id, key)) for key in keys))
    finally:
        await inbox.close()
        await inbox_pool.close()
    assert sum(not r.duplicate for r in results) == 150
    assert len({r.event_id for r in results}) == 150


def test_the_pre_encoded_answer_is_byte_identical_to_the_json_response() -> None:
    event_id = uuid.uuid4()
    for duplicate, status in ((False, 202), (True, 200)):
        ours = stored_response(Stored(event_id, duplicate))
        reference = JSONResponse({"event_id": str(event_id), "duplicate": duplicate}, status_code=status)
        assert (ours.status_code, ours.body, ours.raw_headers) == (status, reference.body, reference.raw_headers)
