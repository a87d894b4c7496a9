"""Provider rate limits shared by every worker process: one Redis bucket per provider and key.

Each bucket holds one token and refills at the provider's rate, so requests under one key are
spaced evenly (`1/rate` apart) and no window of a second ever holds more than the limit. The
bucket is stored as the time its next token becomes free; one Lua script reads the Redis
clock, reserves the next free slot and answers how long the caller must wait for it, so
workers never race and their clocks never matter. A caller waits for its slot; it never fails.

Keys are chosen by the action (a credential id, plus a channel for Slack); never a secret.
Redis is optional for sending: when it cannot be reached the limiter lets every request
through, logs one warning, and tries Redis again a few seconds later.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable, Mapping

import redis.asyncio as redis
from redis.exceptions import RedisError

from actions.base import RateLimiter
from oauth.providers import default_rates

log = logging.getLogger(__name__)

# Requests per second, per key, as each provider declares it (oauth/providers.py). Override
# with HOOKYARD_RATE_LIMITS (e.g. "resend=5/s").
DEFAULT_RATES: Mapping[str, float] = default_rates()

# KEYS[1]: the bucket; ARGV[1]: requests per second. Returns the microseconds to wait.
_RESERVE = """
local rate = tonumber(ARGV[1])
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000000 + tonumber(clock[2])
local free_at = tonumber(redis.call('GET', KEYS[1]))
if free_at == nil or free_at < now then free_at = now end
local next_free = free_at + 1000000 / rate
redis.call('SET', KEYS[1], string.format('%.0f', next_free), 'PX', math.ceil((next_free - now) / 1000) + 1000)
return math.floor(free_at - now)
"""

_REDIS_TIMEOUT_S = 2.0
_RETRY_REDIS_AFTER_S = 5.0


def rates_with_overrides(overrides: Iterable[tuple[str, float]] = ()) -> dict[str, float]:
    """The default per-provider rates with configured ones on top (0 means unlimited)."""
    rates = dict(DEFAULT_RATES)
    rates.update(overrides)
    return rates


class RedisRateLimiter:
    """A `RateLimiter` backed by Redis; one per worker process, shared by all its actions."""

    def __init__(self, client: redis.Redis, rates: Mapping[str, float], *, prefix: str = "hookyard:ratelimit") -> None:
        self._script = client.register_script(_RESERVE)
        self._rates = dict(rates)
        self._prefix = prefix
        self._skip_redis_until = 0.0
        self._degraded = False

    async def acquire(self, provider: str, key: str) -> None:
        """Wait until one request to `provider` under `key` fits its rate."""
        rate = self._rates.get(provider, 0.0)
        if rate <= 0 or time.monotonic() < self._skip_redis_until:
            return
        try:
            async with asyncio.timeout(_REDIS_TIMEOUT_S):
                wait_us = int(await self._script(keys=[f"{self._prefix}:{provider}:{key}"], args=[rate]))
        except (RedisError, OSError, TimeoutError) as exc:
            self._degrade(exc)
            return
        if self._degraded:
            self._degraded = False
            log.info("rate limiting is back: Redis answers again")
        if wait_us > 0:
            await asyncio.sleep(wait_us / 1_000_000)

    def _degrade(self, exc: BaseException) -> None:
        # Sending must not stop because Redis is down: go unlimited for a while, warn once.
        self._skip_redis_until = time.monotonic() + _RETRY_REDIS_AFTER_S
        if not self._degraded:
            self._degraded = True
            log.warning("rate limiting is off: Redis is unreachable (%s); sending without limits", type(exc).__name__)


async def acquire(limiter: RateLimiter | None, provider: str, key: str) -> None:
    """Wait for `limiter` if the attempt has one (no limiter means unlimited)."""
    if limiter is not None:
        await limiter.acquire(provider, key)
