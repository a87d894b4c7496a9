"""Connections to owners' own PostgreSQL databases (credential provider `postgres`).

An owner's database is an outbound target like an HTTP URL, so it obeys the egress policy:
the host is resolved and checked by `EgressPolicy.resolve`, and the connection goes to the
address that was checked (with `sslmode=verify-full` it goes to the name, which the server's
certificate must then prove). hookyard's own database is refused whatever the policy allows.

Every connection is bounded: a connect timeout, and `statement_timeout`, `lock_timeout` and
`idle_in_transaction_session_timeout` set for the session, so an owner's slow or locked table
costs a bounded time. Pools are small (`HOOKYARD_OWNER_DB_POOL_MAX`), one per credential, and
closed when unused. Errors are `OwnerDbError`, whose message names the problem and never the
password (asyncpg's own messages are replaced, not passed on).
"""

from __future__ import annotations

import asyncio
import hashlib
import ssl
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit
from uuid import UUID

import asyncpg
import httpcore

from actions.egress import EgressPolicy, EgressRefused
from oauth.providers import PostgresTarget, PostgresUrlError, postgres_target
from settings import Settings
from settings.egress import parse_allow

# A pool nobody used for this long is closed (the credential may be gone, the workflow paused).
POOL_IDLE_S = 300.0


class OwnerDbError(RuntimeError):
    """An owner's database cannot be used; the message is shown to the owner (no secrets)."""


@dataclass(frozen=True, slots=True)
class OwnerDbBounds:
    """The limits every connection to an owner's database runs under."""

    pool_max: int = 2
    connect_timeout_s: float = 5.0
    statement_timeout_s: float = 5.0
    # hookyard's own database (host, port, name), which no credential may point at.
    own_database: tuple[str, int, str] | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> OwnerDbBounds:
        """The bounds the settings give, with hookyard's own database to refuse."""
        return cls(
            pool_max=settings.owner_db_pool_max,
            connect_timeout_s=settings.owner_db_connect_timeout_s,
            statement_timeout_s=settings.owner_db_statement_timeout_s,
            own_database=own_database(settings.database_url),
        )


def own_database(database_url: str) -> tuple[str, int, str] | None:
    """(host, port, database) of hookyard's own database URL, or None if it cannot be read."""
    try:
        parts = urlsplit(database_url)
        host = (parts.hostname or "").lower()
        return host, parts.port or 5432, parts.path.lstrip("/") or (parts.username or "")
    except ValueError:
        return None


def target_of(secret: Mapping[str, Any]) -> PostgresTarget:
    """The connection target of a stored `postgres` secret (`OwnerDbError` if unusable)."""
    try:
        return postgres_target({k: str(v) for k, v in secret.items()})
    except PostgresUrlError as exc:
        raise OwnerDbError(f"credential {exc.field} {exc}") from None


def _ssl_arg(target: PostgresTarget) -> str | ssl.SSLContext:
    if not target.ssl_root_cert:
        return target.sslmode
    context = ssl.create_default_context(cadata=target.ssl_root_cert)
    context.check_hostname = target.sslmode == "verify-full"
    return context


async def _address(target: PostgresTarget, policy: EgressPolicy, bounds: OwnerDbBounds) -> str:
    """The checked address to connect to (the name itself for verify-full)."""
    try:
        addresses = await policy.resolve(target.host, target.port, bounds.connect_timeout_s)
    except EgressRefused as exc:
        raise OwnerDbError(str(exc)) from None
    except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
        raise OwnerDbError(str(exc)) from None
    own = bounds.own_database
    if own is not None and own[1] == target.port and own[2] == target.database:
        own_addresses = {str(a) for a in await _quiet_resolve(policy, own[0], own[1], bounds)}
        if target.host.lower() == own[0] or own_addresses & {str(a) for a in addresses}:
            raise OwnerDbError("egress refused: the credential names hookyard's own database")
    return target.host if target.sslmode == "verify-full" else str(addresses[0])


async def _quiet_resolve(policy: EgressPolicy, host: str, port: int, bounds: OwnerDbBounds) -> list[Any]:
    # hookyard's own host is usually one the policy refuses (loopback): resolve it unchecked.
    try:
        return await EgressPolicy(allow=_ANY).resolve(host, port, bounds.connect_timeout_s)
    except Exception:  # unresolvable: the name comparison alone decides
        return []


_ANY = parse_allow("0.0.0.0/0,::/0")


def _session_settings(bounds: OwnerDbBounds) -> dict[str, str]:
    ms = str(int(bounds.statement_timeout_s * 1000))
    return {
        "application_name": "hookyard-outbox",
        "statement_timeout": ms,
        "lock_timeout": ms,
        # A transaction left open (a process frozen mid-claim) is rolled back by the server.
        "idle_in_transaction_session_timeout": str(int(bounds.statement_timeout_s * 4000)),
    }


def _connect_kwargs(target: PostgresTarget, address: str, bounds: OwnerDbBounds) -> dict[str, Any]:
    return {
        "host": address,
        "port": target.port,
        "user": target.user,
        "password": target.password,
        "database": target.database,
        "ssl": _ssl_arg(target),
        "timeout": bounds.connect_timeout_s,
        "command_timeout": bounds.statement_timeout_s + 1.0,
        "server_settings": _session_settings(bounds),
    }


def describe_error(exc: BaseException, target: PostgresTarget | None, bounds: OwnerDbBounds) -> str:
    """What went wrong in words the owner can act on; never the password, never asyncpg's text."""
    where = "the owner's database" if target is None else f"{target.host}:{target.port}"
    user = "" if target is None else f" for user {target.user!r}"
    database = "" if target is None else f" {target.database!r}"
    if isinstance(exc, OwnerDbError):
        return str(exc)
    if isinstance(exc, asyncpg.InvalidAuthorizationSpecificationError | asyncpg.InvalidPasswordError):
        return f"{where}: authentication failed{user}"
    if isinstance(exc, asyncpg.InvalidCatalogNameError):
        return f"{where}: database{database} does not exist"
    if isinstance(exc, asyncpg.UndefinedTableError | asyncpg.UndefinedColumnError):
        return f"{exc.__class__.__name__.removesuffix('Error')}: {_first_line(exc)}"
    if isinstance(exc, asyncpg.QueryCanceledError):
        return f"{where}: a statement ran longer than {bounds.statement_timeout_s:g}s and was cancelled"
    if isinstance(exc, TimeoutError | asyncio.TimeoutError):
        return f"{where}: timed out after {bounds.connect_timeout_s:g}s"
    if isinstance(exc, ssl.SSLError):
        return f"{where}: TLS failed ({getattr(exc, 'reason', None) or 'handshake'})"
    if isinstance(exc, asyncpg.PostgresError):
        return f"{where}: the database refused the statement (SQLSTATE {exc.sqlstate}): {_first_line(exc)}"
    if isinstance(exc, OSError | asyncpg.InterfaceError | ConnectionError):
        return f"{where}: cannot connect ({type(exc).__name__})"
    return f"{where}: unexpected {type(exc).__name__}"


def _first_line(exc: BaseException) -> str:
    # Server messages name tables and columns, never the connection's password.
    return str(exc).splitlines()[0][:300] if str(exc) else type(exc).__name__


async def listen_connection(target: PostgresTarget, policy: EgressPolicy, bounds: OwnerDbBounds) -> asyncpg.Connection:
    """A connection of its own (outside any pool) for LISTEN, under the same checks and bounds."""
    address = await _address(target, policy, bounds)
    conn: asyncpg.Connection = await asyncpg.connect(**_connect_kwargs(target, address, bounds))
    return conn


async def check_connect(target: PostgresTarget, policy: EgressPolicy, bounds: OwnerDbBounds) -> None:
    """Connect once and run `SELECT 1`; `OwnerDbError` saying why not (for credential validation)."""
    try:
        address = await _address(target, policy, bounds)
        async with asyncio.timeout(bounds.connect_timeout_s * 2):
            conn = await asyncpg.connect(**_connect_kwargs(target, address, bounds))
            try:
                await conn.fetchval("SELECT 1")
            finally:
                await conn.close(timeout=1)
    except Exception as exc:  # every failure is the owner's to fix: say which, never the secret
        raise OwnerDbError(describe_error(exc, target, bounds)) from None


def _fingerprint(target: PostgresTarget) -> str:
    # In memory only: tells a changed secret from the one a pool was built with.
    text = "\0".join((target.host, str(target.port), target.user, target.password, target.database, target.sslmode))
    return hashlib.sha256((text + target.ssl_root_cert).encode()).hexdigest()


@dataclass
class _Pooled:
    pool: asyncpg.Pool
    fingerprint: str
    used_at: float


class OwnerPools:
    """Small per-credential pools of connections to owners' databases (one process's)."""

    def __init__(self, policy: EgressPolicy, bounds: OwnerDbBounds) -> None:
        self._policy = policy
        self._bounds = bounds
        self._pools: dict[UUID, _Pooled] = {}
        self._lock = asyncio.Lock()

    @property
    def bounds(self) -> OwnerDbBounds:
        """The limits connections run under."""
        return self._bounds

    async def pool(self, credential_id: UUID, target: PostgresTarget) -> asyncpg.Pool:
        """The pool for a credential, created (address checked) on first use or after a change."""
        fingerprint = _fingerprint(target)
        async with self._lock:
            held = self._pools.get(credential_id)
            if held is not None and held.fingerprint == fingerprint:
                held.used_at = time.monotonic()
                return held.pool
            if held is not None:
                del self._pools[credential_id]
                await _close(held.pool)
            address = await _address(target, self._policy, self._bounds)
            pool = await asyncpg.create_pool(
                min_size=0,
                max_size=self._bounds.pool_max,
                max_inactive_connection_lifetime=60.0,
                **_connect_kwargs(target, address, self._bounds),
            )
            self._pools[credential_id] = _Pooled(pool, fingerprint, time.monotonic())
            return pool

    async def listen_connection(self, target: PostgresTarget) -> asyncpg.Connection:
        """A dedicated connection for LISTEN (`listen_connection` with this pool set's policy)."""
        return await listen_connection(target, self._policy, self._bounds)

    async def discard(self, credential_id: UUID) -> None:
        """Drop a credential's pool (after a connection failure, so the next use resolves anew)."""
        async with self._lock:
            held = self._pools.pop(credential_id, None)
        if held is not None:
            await _close(held.pool)

    async def close_idle(self) -> None:
        """Close pools unused for `POOL_IDLE_S`."""
        cutoff = time.monotonic() - POOL_IDLE_S
        async with self._lock:
            idle = [cid for cid, held in self._pools.items() if held.used_at < cutoff]
            closing = [self._pools.pop(cid).pool for cid in idle]
        for pool in closing:
            await _close(pool)

    async def close(self) -> None:
        """Close every pool."""
        async with self._lock:
            closing = [held.pool for held in self._pools.values()]
            self._pools.clear()
        for pool in closing:
            await _close(pool)


async def _close(pool: asyncpg.Pool) -> None:
    try:
        await asyncio.wait_for(pool.close(), 2)
    except Exception:  # a pool whose server vanished: drop its connections
        pool.terminate()
