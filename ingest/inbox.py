"""Group commit for the inbox: many concurrent requests, one INSERT and one commit per turn.

Each request still waits until its own row is committed before it answers, so a 2xx always
means durable; batching only shares the commit's cost (see docs/benchmarks.md).
"""

from __future__ import annotations

import asyncio
import logging
from contextlib import suppress

import asyncpg

from schemas.db import is_storage_error
from schemas.store.events import NewEvent, Stored, insert_events

log = logging.getLogger(__name__)


class InboxClosed(RuntimeError):
    """The writer is shutting down and takes no new events."""


class InboxWriter:
    """Collects events from concurrent requests and stores them in batches."""

    def __init__(self, pool: asyncpg.Pool, *, max_batch: int = 500, flushers: int = 2) -> None:
        self._pool = pool
        self._max_batch = max_batch
        self._queue: list[tuple[NewEvent, asyncio.Future[Stored]]] = []
        self._wake = asyncio.Event()
        self._closing = False
        self._tasks = [asyncio.create_task(self._flush_loop(), name=f"inbox-{i}") for i in range(flushers)]

    async def store(self, event: NewEvent) -> Stored:
        """Store one event; returns once it is committed (or raises the storage error)."""
        if self._closing:
            raise InboxClosed("shutting down")
        future: asyncio.Future[Stored] = asyncio.get_running_loop().create_future()
        self._queue.append((event, future))
        self._wake.set()
        return await future

    async def close(self) -> None:
        """Stop taking events, finish storing those already accepted."""
        self._closing = True
        self._wake.set()
        for task in self._tasks:
            with suppress(asyncio.CancelledError):
                await task

    async def _flush_loop(self) -> None:
        while True:
            if not self._queue:
                if self._closing:
                    return
                self._wake.clear()
                await self._wake.wait()
                continue
            batch, self._queue = self._queue[: self._max_batch], self._queue[self._max_batch :]
            if self._queue:
                self._wake.set()  # let the other flusher start on the rest now
            await self._flush(batch)

    async def _flush(self, batch: list[tuple[NewEvent, asyncio.Future[Stored]]]) -> None:
        # The same delivery twice in one batch: store it once, report the second as a duplicate.
        unique: dict[tuple[str, str, str], NewEvent] = {}
        for event, _ in batch:
            unique.setdefault(event.key, event)
        # Key order keeps two concurrent flushers from locking the same rows in opposite orders.
        events = [unique[key] for key in sorted(unique)]
        stored: dict[tuple[str, str, str], Stored | BaseException]
        try:
            stored = dict(await self._insert(events))
        except asyncpg.PostgresError as exc:
            if is_storage_error(exc) or len(events) == 1:
                self._fail(batch, exc)
                return
            # One unstorable event must not fail everyone else's request: store them one by one.
            log.warning("inbox batch of %d failed (%s); storing one by one", len(events), type(exc).__name__)
            stored = await self._insert_each(events)
        except Exception as exc:  # every waiting request must hear about it
            self._fail(batch, exc)
            return
        first_seen: set[tuple[str, str, str]] = set()
        for event, future in batch:
            result = stored.get(event.key)
            if isinstance(result, BaseException) or result is None:
                if not future.done():
                    future.set_exception(result or RuntimeError("event was not stored"))
                continue
            if event.key in first_seen:
                result = Stored(result.event_id, True)
            first_seen.add(event.key)
            if not future.done():
                future.set_result(result)

    @staticmethod
    def _fail(batch: list[tuple[NewEvent, asyncio.Future[Stored]]], exc: BaseException) -> None:
        log.warning("inbox write failed for %d events: %s", len(batch), type(exc).__name__)
        for _, future in batch:
            if not future.done():
                future.set_exception(exc)

    async def _insert_each(self, events: list[NewEvent]) -> dict[tuple[str, str, str], Stored | BaseException]:
        results: dict[tuple[str, str, str], Stored | BaseException] = {}
        for event in events:
            try:
                results.update(await self._insert([event]))
            except asyncpg.PostgresError as exc:
                results[event.key] = exc
        return results

    async def _insert(self, events: list[NewEvent]) -> dict[tuple[str, str, str], Stored]:
        async with self._pool.acquire(timeout=10) as conn:
            return await insert_events(conn, events)
