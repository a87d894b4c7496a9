"""In-process cache of endpoint verification data, dropped on change via LISTEN/NOTIFY.

A TTL bounds staleness if a notification is ever missed (e.g. while the listener reconnects).
"""

from __future__ import annotations

import asyncio
import logging
import time
from contextlib import suppress
from uuid import UUID

import asyncpg

from oauth.crypto import Keyring
from schemas import db
from schemas.errors import NotFound
from schemas.store.endpoints import ENDPOINTS_CHANNEL, EndpointAuth, load_auth

log = logging.getLogger(__name__)


class EndpointCache:
    """endpoint id -> EndpointAuth (or None for unknown ids), with a TTL."""

    def __init__(self, pool: asyncpg.Pool, keyring: Keyring, database_url: str, ttl_s: float = 30.0) -> None:
        self._pool = pool
        self._keyring = keyring
        self._url = database_url
        self._ttl = ttl_s
        self._entries: dict[UUID, tuple[EndpointAuth | None, float]] = {}
        self._listener: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Begin listening for invalidations."""
        self._listener = asyncio.create_task(self._listen(), name="endpoint-cache-listener")

    async def close(self) -> None:
        """Stop listening."""
        if self._listener:
            self._listener.cancel()
            with suppress(asyncio.CancelledError):
                await self._listener

    async def get(self, endpoint_id: UUID) -> EndpointAuth | None:
        """Verification data for a live endpoint, or None."""
        now = time.monotonic()
        hit = self._entries.get(endpoint_id)
        if hit is not None and hit[1] > now:
            return hit[0]
        auth: EndpointAuth | None = None
        async with self._pool.acquire(timeout=10) as conn:
            with suppress(NotFound):
                auth = await load_auth(conn, self._keyring, endpoint_id)
        # Unknown ids are cached briefly only, so a burst of junk cannot pin memory for long.
        self._entries[endpoint_id] = (auth, now + (self._ttl if auth else 2.0))
        if len(self._entries) > 100_000:
            self._entries.clear()
        return auth

    def invalidate(self, endpoint_id: UUID | None = None) -> None:
        """Forget one endpoint, or everything."""
        if endpoint_id is None:
            self._entries.clear()
        else:
            self._entries.pop(endpoint_id, None)

    def _on_notify(self, payload: str) -> None:
        try:
            self.invalidate(UUID(payload))
        except ValueError:
            self.invalidate()

    async def _listen(self) -> None:
        # On every (re)connection: anything may have changed while we were not listening.
        await db.listen(self._url, ENDPOINTS_CHANNEL, self._on_notify, on_connected=self.invalidate)
