"""The HTTP application: ingest endpoints, the owners' JSON API and health probes."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import redis.asyncio as redis
from starlette.applications import Starlette
from starlette.routing import Route

from hookyard.settings import Settings
from ingest import api, health, hooks
from ingest.endpoint_cache import EndpointCache
from ingest.errors import EXCEPTION_HANDLERS
from ingest.inbox import InboxWriter
from ingest.state import AppState
from oauth.crypto import Keyring
from schemas import db

ROUTES = [
    Route("/hooks/{endpoint_id}", hooks.receive_webhook, methods=["POST"]),
    Route("/healthz", health.healthz, methods=["GET"]),
    Route("/readyz", health.readyz, methods=["GET"]),
    *api.ROUTES,
]


def create_app(settings: Settings, keyring: Keyring) -> Starlette:
    """Build the app; connections open in the lifespan, not here."""

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[dict[str, AppState]]:
        pool = await db.create_pool(settings.database_url, min_size=settings.db_pool_min, max_size=settings.db_pool_max)
        inbox = InboxWriter(pool)
        endpoints = EndpointCache(pool, keyring, settings.database_url)
        endpoints.start()
        redis_client = redis.from_url(settings.redis_url)
        try:
            yield {"app": AppState(settings, pool, keyring, inbox, endpoints, redis_client)}
        finally:
            # In-flight requests are done by now (uvicorn drains them first); flush the inbox last.
            await inbox.close()
            await endpoints.close()
            await redis_client.aclose()
            await pool.close()

    return Starlette(routes=ROUTES, exception_handlers=EXCEPTION_HANDLERS, lifespan=lifespan)
