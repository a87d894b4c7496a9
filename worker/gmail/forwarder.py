"""Forwards stored Gmail pushes to the mailbox workflows (see worker/forwarding.py).

Accepting a push raises its mailbox's announced history id and bumps `notify_seq`; hand-over
signals each mailbox whose pushes are ahead of what it was told (one signal per mailbox, with
the highest id, however many pushes arrived) and records the sequence number it reached.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from uuid import UUID

import asyncpg
import orjson
from temporalio.client import Client

from schemas.store import gmail as store
from schemas.store.gmail import MailboxRef
from settings import Settings
from triggers.base import InboxEvent
from triggers.gmail import PUSH_SOURCE_TYPE
from worker.gmail.contract import signal_mailbox


class GmailPushForwarder:
    """The `gmail.push` source's forwarder."""

    source_type = PUSH_SOURCE_TYPE

    def __init__(self, settings: Settings) -> None:
        self._settings = settings

    async def accept(self, conn: asyncpg.Connection, events: Sequence[InboxEvent]) -> list[bool]:
        """Note each push on its mailbox; False for pushes no active mailbox wants."""
        parsed = [_parse(event) for event in events]
        refs = [p[0] for p in parsed if p is not None]
        history_ids = [p[1] for p in parsed if p is not None]
        active = await store.note_pushes(conn, refs, history_ids) if refs else set()
        return [p is not None and p[0] in active for p in parsed]

    async def handover(
        self, pool: asyncpg.Pool, connect: Callable[[], Awaitable[Client]], limit: int
    ) -> tuple[int, list[BaseException]]:
        """Signal every mailbox with unsignalled pushes; returns (how many, failures)."""
        async with pool.acquire() as conn:
            rows = await store.unsignalled(conn, limit)
        if not rows:
            return 0, []
        client = await connect()
        results = await asyncio.gather(
            *(
                signal_mailbox(
                    client,
                    self._settings.for_triggers(),
                    MailboxRef(row["owner_id"], row["credential_id"]),
                    history_id=row["notified_history_id"],
                )
                for row in rows
            ),
            return_exceptions=True,
        )
        done = [row for row, result in zip(rows, results, strict=True) if result is None]
        if done:
            async with pool.acquire() as conn:
                await store.mark_signalled(conn, [r["credential_id"] for r in done], [r["notify_seq"] for r in done])
        return len(rows), [r for r in results if isinstance(r, BaseException)]


def _parse(event: InboxEvent) -> tuple[MailboxRef, int] | None:
    try:
        body = orjson.loads(event.body)
        return MailboxRef(event.owner_id, UUID(event.source_id)), int(body["historyId"])
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
        return None
