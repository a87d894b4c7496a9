"""Shared provider rate limits against the real Redis of the test stack."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as redis

from actions.ratelimit import DEFAULT_RATES, RedisRateLimiter, rates_with_overrides
from hookyard import services
from settings import SettingsError, load_settings, parse_rate_limits
from tests.conftest import Stack

pytestmark = pytest.mark.integration


@pytest.fixture
async def clients(stack: Stack) -> AsyncIterator[tuple[redis.Redis, redis.Redis]]:
    """Two Redis clients, as two worker processes would each have."""
    first, second = redis.from_url(stack.redis_url), redis.from_url(stack.redis_url)
    yield first, second
    await first.aclose()
    await second.aclose()


async def test_two_workers_sharing_redis_stay_within_the_limit(clients: tuple[redis.Redis, redis.Redis]) -> None:
    rate = 5.0
    workers = [RedisRateLimiter(client, {"resend": rate}) for client in clients]
    key = f"cred-{uuid.uuid4()}"
    granted: list[float] = []

    async def send(limiter: RedisRateLimiter) -> None:
        await limiter.acquire("resend", key)
        granted.append(time.monotonic())

    # 12 requests, 6 from each worker, all wanting to go at once: about 2.2 s at 5/s.
    await asyncio.gather(*(send(workers[i % 2]) for i in range(12)))

    granted.sort()
    # Any 0.9 s window holds at most 5 grants (a second at 5/s, less 0.1 s for timer jitter);
    # two unshared limiters would allow about twice as many.
    busiest = max(sum(1 for t in granted if start <= t < start + 0.9) for start in granted)
    assert len(granted) == 12
    assert busiest <= rate


async def test_different_credentials_do_not_share_a_bucket(clients: tuple[redis.Redis, redis.Redis]) -> None:
    limiter = RedisRateLimiter(clients[0], {"slack": 0.2})  # one request per 5 s per key
    started = time.monotonic()
    await asyncio.gather(*(limiter.acquire("slack", f"cred-{uuid.uuid4()}:C1") for _ in range(3)))

    assert time.monotonic() - started < 2.0


async def test_providers_without_a_rate_are_not_limited(clients: tuple[redis.Redis, redis.Redis]) -> None:
    limiter = RedisRateLimiter(clients[0], {"novu": 0.0})
    started = time.monotonic()
    for _ in range(5):
        await limiter.acquire("novu", "k")
        await limiter.acquire("unknown-provider", "k")

    assert time.monotonic() - started < 2.0


async def test_with_redis_down_acquire_returns_and_warns_once(caplog: pytest.LogCaptureFixture) -> None:
    # Nothing listens on this port: every Redis call fails at once.
    unreachable = redis.from_url(f"redis://127.0.0.1:{services.free_port()}/0", socket_connect_timeout=0.5)
    limiter = RedisRateLimiter(unreachable, {"resend": 1.0})
    started = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="actions.ratelimit"):
        for _ in range(5):
            await limiter.acquire("resend", "cred-1")
    await unreachable.aclose()

    assert time.monotonic() - started < 3.0
    warnings = [r for r in caplog.records if "rate limiting is off" in r.getMessage()]
    assert len(warnings) == 1


def test_rate_limits_are_read_from_the_environment() -> None:
    settings = load_settings({"HOOKYARD_RATE_LIMITS": "resend=5/s, postmark=120/m,slack=0"})

    assert settings.rate_limits == (("resend", 5.0), ("postmark", 2.0), ("slack", 0.0))
    assert rates_with_overrides(settings.rate_limits) == {**DEFAULT_RATES, "resend": 5.0, "postmark": 2.0, "slack": 0.0}


@pytest.mark.parametrize("value", ["resend", "resend=fast", "=2/s", "resend=2/week", "resend=-1/s"])
def test_unreadable_rate_limits_are_refused(value: str) -> None:
    with pytest.raises(SettingsError, match="HOOKYARD_RATE_LIMITS"):
        parse_rate_limits(value)
