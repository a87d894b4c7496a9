"""asyncpg pool creation with JSON codecs; the only place connections are configured."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from contextlib import suppress
from typing import Any, TypeVar, overload
from urllib.parse import urlsplit

import asyncpg
import orjson

log = logging.getLogger(__name__)

T = TypeVar("T")

# The one classification of database errors: these mean "PostgreSQL cannot answer now" (the
# connection broke, the server is restarting or refusing connections, a statement was cancelled
# by a timeout or an administrator, a transaction lost a conflict), never "this request is
# wrong". Every process treats them as transient: ingest answers 503 with Retry-After, the
# dispatcher, worker and sync loops back off and carry on.
STORAGE_ERRORS: tuple[type[Exception], ...] = (
    OSError,  # refused, reset, unreachable; includes TimeoutError (connect and command timeouts)
    asyncpg.PostgresConnectionError,  # SQLSTATE class 08, and a connection closed mid-operation
    asyncpg.exceptions.OperatorInterventionError,  # 57: shutdown, crash, cannot connect now, cancelled
    asyncpg.exceptions.InsufficientResourcesError,  # 53: too many connections, disk full
    asyncpg.exceptions.TransactionRollbackError,  # 40: deadlock, serialization failure
    asyncpg.exceptions.ReadOnlySQLTransactionError,  # 25006: reached a standby during a failover
    asyncpg.exceptions.InternalClientError,  # protocol state after a broken operation ("cannot switch to state")
    asyncpg.InterfaceError,  # pool closed, connection released or closed under us
)
# Subclasses of the above that are a mistake in the request or the settings: retrying cannot help.
# asyncpg's client-side DataError (an argument it cannot encode, e.g. JSON too deep) subclasses
# InterfaceError but is the data's fault: retrying the same write would fail forever.
_PERMANENT: tuple[type[Exception], ...] = (
    asyncpg.exceptions.ClientConfigurationError,
    asyncpg.exceptions._base.DataError,
)


def is_storage_error(exc: BaseException) -> bool:
    """True if `exc` means the database is unavailable for now (retry later), see STORAGE_ERRORS."""
    return isinstance(exc, STORAGE_ERRORS) and not isinstance(exc, _PERMANENT)


def _dumps(value: Any) -> str:
    return orjson.dumps(value).decode()


async def _init_connection(conn: asyncpg.Connection) -> None:
    for typename in ("json", "jsonb"):
        await conn.set_type_codec(typename, encoder=_dumps, decoder=orjson.loads, schema="pg_catalog")


async def _keep_session(conn: asyncpg.Connection) -> None:
    """No reset query on release: for pools whose users leave no session state (see `create_pool`)."""


async def create_pool(
    url: str, *, min_size: int = 2, max_size: int = 10, reset_on_release: bool = True
) -> asyncpg.Pool:
    """A pool whose connections read and write json/jsonb as Python values.

    `reset_on_release=False` skips the reset round trip (UNLISTEN, RESET ALL, advisory unlocks,
    CLOSE ALL) on every release. Only for a pool whose users run single autocommit statements
    and nothing that sets session state (SET, LISTEN, advisory locks, cursors); asyncpg still
    rolls back a transaction left open and drops listeners client-side.
    """
    pool: asyncpg.Pool = await asyncpg.create_pool(
        url,
        min_size=min_size,
        max_size=max_size,
        init=_init_connection,
        command_timeout=30,
        reset=None if reset_on_release else _keep_session,
    )
    return pool


@overload
async def wait_for_pool(
    url: str, stop: None, *, min_size: int = 2, max_size: int = 10, reset_on_release: bool = True
) -> asyncpg.Pool: ...
@overload
async def wait_for_pool(
    url: str, stop: asyncio.Event, *, min_size: int = 2, max_size: int = 10, reset_on_release: bool = True
) -> asyncpg.Pool | None: ...
async def wait_for_pool(
    url: str, stop: asyncio.Event | None, *, min_size: int = 2, max_size: int = 10, reset_on_release: bool = True
) -> asyncpg.Pool | None:
    """`create_pool`, retried with backoff (to 10 s) while PostgreSQL is not up yet.

    Processes start before their database does (or while it restarts) and wait, saying so,
    rather than exit. Returns None if `stop` is set first.
    """
    delay = 0.5
    while stop is None or not stop.is_set():
        try:
            return await create_pool(url, min_size=min_size, max_size=max_size, reset_on_release=reset_on_release)
        except Exception as exc:
            if not is_storage_error(exc):
                raise
            log.warning("waiting for PostgreSQL at %s (%s); retrying in %.1fs", _where(url), type(exc).__name__, delay)
        if stop is None:
            await asyncio.sleep(delay)
        else:
            with suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), delay)
        delay = min(delay * 2, 10.0)
    return None


def _where(url: str) -> str:
    """Host and port of a database URL, never its credentials."""
    parts = urlsplit(url)
    return f"{parts.hostname or 'localhost'}:{parts.port or 5432}"


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
        except Exception as exc:  # whatever it is, the listener waits and tries again
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
        except Exception as exc:  # STORAGE_ERRORS, or anything else: reconnect, never die
            log.warning("listener for %s lost its connection: %s", channel, type(exc).__name__)
        finally:
            with suppress(Exception):
                await conn.close()


async def in_savepoint(conn: asyncpg.Connection, write: Callable[[], Awaitable[T]], default: T, what: str) -> T:
    """Run `write` in a savepoint of the caller's transaction: a defect in it is logged (as
    `what` could not be written) and gives `default`, never undoing the change it rides on;
    storage errors still fail the whole transaction, so it is retried."""
    try:
        async with conn.transaction():
            return await write()
    except Exception as exc:
        if is_storage_error(exc):
            raise
        log.exception("%s could not be written; the change it rides on is kept", what)
        return default
