"""What the HTTP app holds for its lifetime; built in the lifespan, read from `request.state.app`."""

from __future__ import annotations

from dataclasses import dataclass

import asyncpg
import redis.asyncio as redis
from starlette.requests import Request

from hookyard.settings import Settings
from ingest.endpoint_cache import EndpointCache
from ingest.inbox import InboxWriter
from oauth.crypto import Keyring


@dataclass
class AppState:
    """Long-lived clients shared by every request."""

    settings: Settings
    pool: asyncpg.Pool
    keyring: Keyring
    inbox: InboxWriter
    endpoints: EndpointCache
    redis: redis.Redis


def app_state(request: Request) -> AppState:
    """The running app's state."""
    state: AppState = request.state.app
    return state
