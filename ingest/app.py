"""The HTTP application: ingest endpoints, the owners' JSON API and health probes."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
import redis.asyncio as redis
from starlette.applications import Starlette

from ingest import api, codec_server, console, pubsub
from ingest.endpoint_cache import EndpointCache
from ingest.errors import EXCEPTION_HANDLERS
from ingest.inbox import InboxWriter
from ingest.oidc import OidcVerifier
from ingest.state import AppState
from oauth.crypto import Keyring
from oauth.google import google_from_settings
from schemas import db
from settings import Settings
from telemetry.metrics import Metrics
from telemetry.tracing import NOOP, Tracing

# Every route comes from a declared operation (ingest/api/operations.py), as does the OpenAPI document.
ROUTES = api.all_routes()


def create_app(
    settings: Settings, keyring: Keyring, metrics: Metrics | None = None, tracing: Tracing = NOOP
) -> Starlette:
    """Build the app; connections open in the lifespan, not here. Without `metrics`, a private registry."""
    metrics = Metrics() if metrics is None else metrics

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[dict[str, AppState]]:
        # Started before PostgreSQL (or while it restarts): wait for it rather than exit.
        pool = await db.wait_for_pool(
            settings.database_url, None, min_size=settings.db_pool_min, max_size=settings.db_pool_max
        )
        inbox = InboxWriter(pool)
        endpoints = EndpointCache(pool, keyring, settings.database_url)
        endpoints.start()
        redis_client = redis.from_url(settings.redis_url)
        http = httpx.AsyncClient(timeout=15.0, follow_redirects=False)
        state = AppState(
            settings, pool, keyring, inbox, endpoints, redis_client, http, google_from_settings(settings.for_google())
        )
        state.metrics, state.tracing = metrics, tracing
        state.oidc = OidcVerifier(http, certs_url=settings.google_certs_url)
        pubsub.announce(settings)
        try:
            yield {"app": state}
        finally:
            await http.aclose()
            # In-flight requests are done by now (uvicorn drains them first); flush the inbox last.
            await inbox.close()
            await endpoints.close()
            await redis_client.aclose()
            await pool.close()
            tracing.flush()

    # Codec routes exist only with a token; the console's pages are not part of the API document.
    routes = [*ROUTES, *codec_server.routes(settings), *console.routes()]
    return Starlette(routes=routes, exception_handlers=EXCEPTION_HANDLERS, lifespan=lifespan)
