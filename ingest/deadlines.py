"""Body-read deadlines enforced by one sweeper task, instead of a loop timer per request.

`asyncio.timeout` sets and cancels an event-loop timer for every request; on the webhook path
that was a measurable share of the per-request CPU (docs/benchmarks.md). Here a request only
registers its task and deadline in a dict; one task wakes every `tick` seconds and cancels the
tasks whose deadline has passed, so a slow body is cut off between `timeout` and
`timeout + tick` after it started.
"""

from __future__ import annotations

import asyncio
from contextlib import suppress


class BodyTimeout(Exception):
    """The body did not arrive before the deadline (the reader's task was cancelled for it)."""


class BodyDeadlines:
    """Deadlines of the tasks reading request bodies; see the module docstring."""

    def __init__(self, tick_s: float) -> None:
        self._tick_s = tick_s
        self._deadlines: dict[asyncio.Task[object], float] = {}
        self._expired: set[asyncio.Task[object]] = set()
        self._sweeper: asyncio.Task[None] | None = None

    def watch(self, timeout_s: float) -> asyncio.Task[object]:
        """Start the current task's deadline; pair with `done` in a `finally`."""
        task: asyncio.Task[object] = asyncio.current_task()  # type: ignore[assignment]
        loop = asyncio.get_running_loop()
        self._deadlines[task] = loop.time() + timeout_s
        if self._sweeper is None:
            self._sweeper = loop.create_task(self._sweep(), name="body-deadlines")
        return task

    def done(self, task: asyncio.Task[object], exc: BaseException | None) -> None:
        """End the deadline. If the sweeper cancelled `task` and `exc` is that cancellation,
        raise BodyTimeout instead; any other exception is the caller's to re-raise."""
        self._deadlines.pop(task, None)
        if task in self._expired:
            self._expired.discard(task)
            if isinstance(exc, asyncio.CancelledError) and task.uncancel() == 0:
                raise BodyTimeout from None

    async def close(self) -> None:
        """Stop the sweeper (at shutdown)."""
        if self._sweeper is not None:
            self._sweeper.cancel()
            with suppress(asyncio.CancelledError):
                await self._sweeper
            self._sweeper = None

    async def _sweep(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(self._tick_s)
            now = loop.time()
            late = [task for task, deadline in self._deadlines.items() if deadline <= now]
            for task in late:
                # Cancelled once; the reader turns it into BodyTimeout in `done`.
                del self._deadlines[task]
                self._expired.add(task)
                task.cancel()
