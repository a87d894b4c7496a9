"""Connecting to Temporal, patiently: a process may start before the server does."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from temporalio.client import Client

from hookyard.settings import Settings

log = logging.getLogger(__name__)


async def connect(settings: Settings) -> Client:
    """One connection attempt to the configured Temporal server and namespace."""
    return await Client.connect(settings.temporal_address, namespace=settings.temporal_namespace)


async def connect_with_retry(settings: Settings, stop: asyncio.Event | None = None) -> Client | None:
    """Keep trying (backing off to 10 s) until connected; None if `stop` is set first."""
    delay = 0.5
    while stop is None or not stop.is_set():
        try:
            return await connect(settings)
        except Exception as exc:  # the SDK raises RuntimeError for transport failures
            log.warning(
                "temporal at %s unreachable (%s); retrying in %.1fs",
                settings.temporal_address,
                type(exc).__name__,
                delay,
            )
        if stop is None:
            await asyncio.sleep(delay)
        else:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), delay)
        delay = min(delay * 2, 10.0)
    return None
