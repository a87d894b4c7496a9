"""asyncpg pool creation with JSON codecs; the only place connections are configured."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from contextlib import suppress
from typing import Any

import asyncpg
import orjson

log = logging.getLogger(__name__)


def _dumps(value: Any) -> str:
    return orjson.dumps(value).decode()


async def _init_connection(conn: asyncpg.Connection) -> None:
    for typename in ("json", "jsonb"):
        await conn.set_type_codec(typename, encoder=_dumps, decoder=orjson.loads, schema="pg_catalog")


async def create_pool(url: str, *, min_size: int = 2, max_size: int = 10) -> asyncpg.Pool:
    """A pool whose connections read and write json/jsonb as Python values."""
    pool: asyncpg.Pool = await asyncpg.create_pool(
        url, min_size=min_size, max_size=max_size, init=_init_connection, command_timeout=30
    )
    return pool


async def connect(url: str) -> asyncpg.Connection:
    """One connection configured like the pool's (for listeners and CLI commands)."""
    conn: asyncpg.Connection = await asyncpg.connect(url)
    await _init_connection(conn)
    return conn


async def listen(
    url: str,
    channel: str,
    on_notify: Callable[[str], None],
    on_connected: Callable[[], None] = lambda: None,
) -> None:
    """LISTEN on a channel forever (until cancelled), reconnecting after any connection loss.

    `on_connected` runs after each (re)connection: notifications sent while disconnected are
    lost, so callers use it to resynchronise.
    """
    while True:
        try:
            conn = await connect(url)
        except (OSError, asyncpg.PostgresError) as exc:
            log.warning("listener for %s cannot connect: %s", channel, type(exc).__name__)
            await asyncio.sleep(2)
            continue
        try:
            await conn.add_listener(channel, lambda _c, _pid, _ch, payload: on_notify(payload))
            on_connected()
            # asyncpg notices a dead server only on I/O, so probe now and then.
            while True:
                await asyncio.sleep(5)
                await conn.execute("SELECT 1")
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            log.warning("listener for %s lost its connection: %s", channel, type(exc).__name__)
        finally:
            with suppress(Exception):
                await conn.close()
