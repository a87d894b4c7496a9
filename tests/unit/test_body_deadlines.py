"""Body-read deadlines kept by one sweeper task (ingest/deadlines.py)."""

from __future__ import annotations

import asyncio

import pytest

from ingest.deadlines import BodyDeadlines, BodyTimeout


async def _read(deadlines: BodyDeadlines, timeout_s: float, takes_s: float) -> str:
    task = deadlines.watch(timeout_s)
    try:
        await asyncio.sleep(takes_s)
    except BaseException as exc:
        deadlines.done(task, exc)
        raise
    deadlines.done(task, None)
    return "read"


async def test_a_read_that_outlasts_its_deadline_ends_in_body_timeout() -> None:
    deadlines = BodyDeadlines(tick_s=0.01)
    try:
        with pytest.raises(BodyTimeout):
            await asyncio.wait_for(_read(deadlines, 0.05, 5.0), timeout=2)
    finally:
        await deadlines.close()


async def test_a_read_within_its_deadline_leaves_no_cancellation_behind() -> None:
    deadlines = BodyDeadlines(tick_s=0.01)
    try:

        async def read_then_wait() -> str:
            result = await _read(deadlines, 0.05, 0.01)
            await asyncio.sleep(0.1)  # past the deadline: nothing may cancel this any more
            return result

        assert await read_then_wait() == "read"
    finally:
        await deadlines.close()


async def test_a_cancellation_from_elsewhere_stays_a_cancellation() -> None:
    deadlines = BodyDeadlines(tick_s=0.01)
    try:
        task = asyncio.create_task(_read(deadlines, 5.0, 5.0))
        await asyncio.sleep(0.02)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    finally:
        await deadlines.close()


async def test_slow_reads_time_out_independently_of_fast_ones() -> None:
    deadlines = BodyDeadlines(tick_s=0.01)
    try:
        results = await asyncio.gather(
            *(_read(deadlines, 0.05, 1.0 if n % 2 else 0.0) for n in range(10)), return_exceptions=True
        )
    finally:
        await deadlines.close()
    assert [type(r).__name__ for r in results] == ["str", "BodyTimeout"] * 5
