"""What the HTTP app holds for its lifetime; built in the lifespan, read from `request.state.app`."""

from __future__ import annotations

from dataclasses import dataclass, field

import asyncpg
import httpx
import redis.asyncio as redis
from starlette.requests import Request

from ingest.endpoint_cache import EndpointCache
from ingest.inbox import InboxWriter
from ingest.oidc import OidcVerifier
from oauth.crypto import Keyring
from oauth.google import GoogleOAuth
from settings import Settings
from telemetry.metrics import Metrics
from telemetry.tracing import NOOP, Tracing


@dataclass
class AppState:
    """Long-lived clients shared by every request."""

    settings: Settings
    pool: asyncpg.Pool
    keyring: Keyring
    inbox: InboxWriter
    endpoints: EndpointCache
    redis: redis.Redis
    # Outbound calls made while answering (OAuth token exchange, revocation).
    http: httpx.AsyncClient | None = None
    google: GoogleOAuth | None = None
    # Observability; defaults record into a private registry and trace nothing.
    metrics: Metrics = field(default_factory=Metrics)
    tracing: Tracing = NOOP
    # Checks Google-signed OIDC tokens (Pub/Sub pushes, Cloud Scheduler ticks); one key cache.
    oidc: OidcVerifier | None = None


def app_state(request: Request) -> AppState:
    """The running app's state."""
    state: AppState = request.state.app
    return state
