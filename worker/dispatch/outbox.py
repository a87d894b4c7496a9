"""The database outbox poller: owners' outbox rows become events; outcomes are written back.

A task of the dispatcher. For each active `postgres.outbox` workflow due for a poll (leased in
`outbox_health`, `SKIP LOCKED`, so replicas never poll one workflow at once):

1. claim: in one transaction on the owner's database, lock due rows (`FOR UPDATE SKIP
   LOCKED`); while that transaction is open, record the claims and store one event per row in
   hookyard's database and commit there; only then set the rows PROCESSING and commit on the
   owner's side. A crash before hookyard's commit rolls back both sides (the rows stay due); a
   crash after it leaves hookyard holding the claim (the row is run once, and skipped by
   later polls while the claim is open) with the owner's row not yet PROCESSING, which the
   write-back accepts. The event's dedup key (credential, table, row id, generation) means a
   claim is stored once whatever is retried.
2. write back: for claims whose execution ended (or whose event will never run), lock the
   claims in hookyard, write SENT or FAILED and the result into the owner's row, and close the
   claims in the same hookyard transaction. A crash between the two repeats the owner's write,
   which is conditioned on the row still being in a claimable state, so it changes nothing.

Failures are recorded per workflow (`outbox_health.last_error`, shown by the API) and backed
off; each workflow's poll is bounded in time, so one owner's slow or broken database never
holds up another's. The protocol and its crash points: docs/architecture.md, "Database outbox".
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from contextlib import suppress
from typing import Any
from uuid import UUID

import asyncpg
import orjson

from actions.egress import EgressPolicy
from actions.owner_db import OwnerDbBounds, OwnerDbError, OwnerPools, describe_error, target_of
from oauth.providers import PostgresTarget
from schemas import db
from schemas.errors import NotFound
from schemas.outbox_sql import OutboxSql, OutboxSqlError, compile_outbox
from schemas.sealed import Cipher
from schemas.store import outbox as store
from schemas.store.credentials import load_secret
from settings import Settings
from telemetry.metrics import Metrics
from triggers.outbox import CREDENTIAL_PROVIDER, body_of

log = logging.getLogger(__name__)

POLL_BATCH = 20
# Polls (and write-backs of different workflows) at once, per dispatcher process.
PARALLEL = 8
# Connections to hookyard's database the poller holds at most (its own pool in the dispatcher).
OUTBOX_POOL_MAX = 6
# How often listeners are brought in line with the workflows and idle pools closed.
UPKEEP_S = 5.0
WRITEBACK_BATCH = 200
_RESULT_CHARS = 16_384


class OutboxConfigError(RuntimeError):
    """The workflow's outbox cannot be polled as configured (credential gone, config unusable)."""


def poll_budget_s(bounds: OwnerDbBounds) -> float:
    """How long one workflow's poll may take at most (connect, claim, store, mark, backlog)."""
    return bounds.connect_timeout_s + 4 * bounds.statement_timeout_s + 5.0


def lease_s(bounds: OwnerDbBounds) -> float:
    """The poll lease: longer than any poll may take, so replicas never poll one workflow at once."""
    return 2 * poll_budget_s(bounds)


def backoff_s(failures: int, interval_s: float) -> float:
    """Seconds to the next poll after `failures` failed polls in a row (doubling to 60 s)."""
    return max(interval_s, float(min(2 ** min(failures, 6), 60)))


def result_of(claim: store.FinishedClaim) -> Any:
    """What the result column receives: the action's result, or the error (and any result)."""
    if claim.outcome == "sent":
        return claim.result
    if claim.outcome == "failed":
        return {"error": (claim.error or "failed")[:_RESULT_CHARS], "result": claim.result}
    return None


def status_of(sql: OutboxSql, claim: store.FinishedClaim) -> str:
    """The status a claim's outcome writes: sent, failed, or pending again (released)."""
    return {"sent": sql.statuses["sent"], "failed": sql.statuses["failed"]}.get(claim.outcome, sql.statuses["pending"])


def _json(value: Any) -> str | None:
    return None if value is None else orjson.dumps(value).decode()


def claimed_rows(
    records: Sequence[Any], config: dict[str, Any], failures: dict[str, int]
) -> tuple[list[store.ClaimedRow], list[str]]:
    """The locked rows as claims, and the ids of rows too large to carry (failed at once)."""
    columns = config.get("columns")
    rows: list[store.ClaimedRow] = []
    too_large: list[str] = []
    for record in records:
        text: str | None = record["row_json"]
        if text is None:  # larger than max_bytes as JSON: measured by the owner's database
            too_large.append(record["id_text"])
            continue
        data = orjson.loads(text)
        if columns is not None:
            data = {name: data.get(name) for name in columns}
        body = body_of(
            table=config["table"],
            row_id=record["id_text"],
            generation=0,  # set when the claim is recorded
            claimed_from=record["status"],
            attempt=failures.get(record["id_text"], 0) + 1,
            row=data,
        )
        rows.append(store.ClaimedRow(record["id_text"], record["status"], body))
    return rows, too_large


async def lock_due(
    oconn: asyncpg.Connection, sql: OutboxSql, skip: list[str], max_row_bytes: int
) -> list[asyncpg.Record]:
    """Step 1a, in the owner's transaction: lock the rows this poll may claim."""
    statement = sql.select_due(skip, max_row_bytes)
    rows: list[asyncpg.Record] = await oconn.fetch(statement.sql, *statement.params)
    return rows


async def mark_processing(oconn: asyncpg.Connection, sql: OutboxSql, records: Sequence[Any]) -> None:
    """Step 1c, in the owner's transaction, after hookyard committed: the rows are PROCESSING."""
    ids = [r["id"] for r in records]
    statement = sql.mark_processing(ids, ids)
    await oconn.execute(statement.sql, *statement.params)


async def write_row(oconn: asyncpg.Connection, sql: OutboxSql, row_id: str, status: str, result: Any) -> bool:
    """Write one row's outcome; False if the row is gone or the application moved it on."""
    text = None if result is None else orjson.dumps(result).decode()
    statement = sql.write_back(row_id, status, text)
    return await oconn.fetchval(statement.sql, *statement.params) is not None


class OutboxPoller:
    """Polls owners' outbox tables and writes outcomes back; one per dispatcher process."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        settings: Settings,
        cipher: Cipher,
        *,
        pools: OwnerPools | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        self._pool = pool
        self._settings = settings
        self._cipher = cipher
        bounds = OwnerDbBounds.from_settings(settings)
        self._pools = pools or OwnerPools(EgressPolicy(settings.egress_allow, settings.egress_deny), bounds)
        self._bounds = bounds
        self._metrics = metrics
        self._wake = asyncio.Event()
        self._listeners = _Listeners(self)

    @property
    def pool(self) -> asyncpg.Pool:
        """hookyard's own database pool."""
        return self._pool

    @property
    def pools(self) -> OwnerPools:
        """The owners' connection pools of this poller."""
        return self._pools

    def wake(self) -> None:
        """Look at once (a LISTEN notification, a test)."""
        self._wake.set()

    async def run(self, stop: asyncio.Event) -> None:
        """Poll and write back until `stop` is set: two loops, so slow polls never delay write-backs."""
        writer = asyncio.create_task(self._write_back_loop(stop), name="outbox-write-back")
        try:
            await self._poll_loop(stop)
        finally:
            await asyncio.wait({writer}, timeout=5)
            writer.cancel()
            with suppress(asyncio.CancelledError):
                await writer
            await self._listeners.close()
            await self._pools.close()

    async def _poll_loop(self, stop: asyncio.Event) -> None:
        # Polls run as tasks in PARALLEL slots: a slow owner's poll holds one slot for at most its
        # budget while the others keep leasing and polling.
        running: set[asyncio.Task[int]] = set()
        try:
            while not stop.is_set():
                self._wake.clear()
                try:
                    free = PARALLEL - len(running)
                    if free > 0:
                        async with self._pool.acquire() as conn:
                            polls = await store.lease_polls(conn, free, lease_s(self._bounds))
                        for poll in polls:
                            task = asyncio.create_task(self.poll_bounded(poll), name=f"outbox-poll-{poll.workflow_id}")
                            running.add(task)
                            task.add_done_callback(running.discard)
                except db.STORAGE_ERRORS as exc:
                    log.warning("outbox poll lease failed: %s", type(exc).__name__)
                except Exception:  # never fatal: the loop must outlive whatever one pass met
                    log.exception("outbox poll lease failed unexpectedly")
                await self._sleep(stop, running)
        finally:
            if running:
                await asyncio.wait(running, timeout=5)
            for task in list(running):
                task.cancel()

    async def _write_back_loop(self, stop: asyncio.Event) -> None:
        # Woken by NOTIFY when an execution of an outbox event ends (schemas/store/terminal.py),
        # else every poll interval; after a reconnection, at once.
        woken = asyncio.Event()
        listener = asyncio.create_task(
            db.listen(self._settings.database_url, store.WRITE_BACK_CHANNEL, lambda _: woken.set(), woken.set),
            name="outbox-write-back-listener",
        )
        try:
            await self._write_back_passes(stop, woken)
        finally:
            listener.cancel()
            with suppress(asyncio.CancelledError):
                await listener

    async def _write_back_passes(self, stop: asyncio.Event, woken: asyncio.Event) -> None:
        upkeep_at = 0.0
        loop = asyncio.get_running_loop()
        while not stop.is_set():
            woken.clear()
            try:
                await self.write_back_all()
                if loop.time() >= upkeep_at:
                    upkeep_at = loop.time() + UPKEEP_S
                    await self._listeners.refresh()
                    await self._pools.close_idle()
            except db.STORAGE_ERRORS as exc:
                log.warning("outbox write-back pass failed: %s", type(exc).__name__)
            except Exception:  # never fatal
                log.exception("outbox write-back pass failed unexpectedly")
            waiters = {asyncio.ensure_future(woken.wait()), asyncio.ensure_future(stop.wait())}
            await asyncio.wait(
                waiters, timeout=self._settings.dispatch_poll_interval_s, return_when=asyncio.FIRST_COMPLETED
            )
            for waiter in waiters:
                waiter.cancel()

    async def pass_once(self) -> int:
        """Poll every due workflow once and write back what ended; returns rows claimed."""
        async with self._pool.acquire() as conn:
            polls = await store.lease_polls(conn, POLL_BATCH, lease_s(self._bounds))
        limit = asyncio.Semaphore(PARALLEL)

        async def one(poll: store.OutboxPoll) -> int:
            async with limit:
                return await self.poll_bounded(poll)

        claimed = sum(await asyncio.gather(*(one(p) for p in polls)))
        await self.write_back_all()
        return claimed

    async def poll_bounded(self, poll: store.OutboxPoll) -> int:
        """One workflow's poll within its time budget; its outcome recorded, never raised."""
        interval = float(poll.trigger_config.get("poll_interval_s", 10))
        error: str | None = None
        claimed, due, lag = 0, None, None
        try:
            async with asyncio.timeout(poll_budget_s(self._bounds)):
                claimed, due, lag = await self.poll(poll)
        except Exception as exc:  # every failure of one owner's poll is recorded, never spread
            error = self._describe(poll, exc)
            log.warning("outbox poll of workflow %s failed: %s", poll.workflow_id, error)
            if isinstance(exc, OSError | asyncpg.InterfaceError | TimeoutError | OwnerDbError):
                await self._pools.discard(UUID(str(poll.trigger_config["credential_id"])))
        batch = int(poll.trigger_config.get("batch_size", 100))
        next_in = backoff_s(poll.failures, interval) if error else (0.0 if claimed >= batch else interval)
        try:
            async with self._pool.acquire() as conn:
                await store.record_poll(
                    conn, poll.workflow_id, claimed=claimed, due_rows=due, lag_s=lag, error=error, next_in_s=next_in
                )
        except db.STORAGE_ERRORS as exc:  # hookyard's own database: the lease runs out and it is polled again
            log.warning("outbox poll of workflow %s not recorded: %s", poll.workflow_id, type(exc).__name__)
        if self._metrics is not None:
            self._metrics.outbox_poll(str(poll.workflow_id), claimed, error is not None, lag)
        return claimed

    def _describe(self, poll: store.OutboxPoll, exc: BaseException) -> str:
        if isinstance(exc, OutboxConfigError | OwnerDbError):
            return str(exc)[:500]
        if isinstance(exc, TimeoutError):
            return f"poll took longer than {poll_budget_s(self._bounds):g}s and was abandoned"
        if isinstance(exc, asyncpg.UndefinedTableError | asyncpg.UndefinedColumnError):
            return f"table {poll.trigger_config.get('table')}: {str(exc).splitlines()[0][:300]}"
        if isinstance(exc, asyncpg.DataError):
            return f"a condition value does not fit its column: {str(exc).splitlines()[0][:300]}"
        if isinstance(exc, asyncpg.InsufficientPrivilegeError):
            return f"permission denied: {str(exc).splitlines()[0][:300]}"
        return describe_error(exc, None, self._bounds)[:500]

    async def target(self, owner_id: UUID, credential_id: UUID) -> PostgresTarget:
        """Where an owner's `postgres` credential connects (`OutboxConfigError` if it cannot be used)."""
        try:
            async with self._pool.acquire() as conn:
                credential, secret = await load_secret(conn, self._cipher, owner_id, credential_id)
        except NotFound:
            raise OutboxConfigError("the credential does not exist (deleted?)") from None
        if credential.provider != CREDENTIAL_PROVIDER:
            raise OutboxConfigError(f"the credential is for {credential.provider}, not postgres")
        return target_of(secret)

    async def owner_pool(self, owner_id: UUID, config: dict[str, Any]) -> asyncpg.Pool:
        """The pool for the database a workflow's trigger config names (its credential, checked)."""
        credential_id = UUID(str(config["credential_id"]))
        return await self._pools.pool(credential_id, await self.target(owner_id, credential_id))

    async def poll(self, poll: store.OutboxPoll) -> tuple[int, int | None, float | None]:
        """Claim due rows of one workflow's table; returns (claimed, due rows left, oldest lag)."""
        config = poll.trigger_config
        try:
            sql = compile_outbox(config)
        except OutboxSqlError as exc:
            raise OutboxConfigError(f"config {exc}") from None
        opool = await self.owner_pool(poll.owner_id, config)
        claimed = await self.claim(poll, sql, opool)
        backlog = sql.backlog()
        async with opool.acquire() as oconn:
            stats = await oconn.fetchrow(backlog.sql, *backlog.params)
        return claimed, stats["due"], stats["lag"]

    async def claim(self, poll: store.OutboxPoll, sql: OutboxSql, opool: asyncpg.Pool) -> int:
        """Step 1: claim due rows and store their events (the protocol in the module docstring)."""
        config = poll.trigger_config
        credential_id = UUID(str(config["credential_id"]))
        table = str(config["table"])
        async with self._pool.acquire() as conn:
            skip = await store.skipped_rows(
                conn,
                credential_id,
                table,
                max_attempts=sql.max_attempts,
                retry_interval_s=sql.retry_interval_s,
                count_failures=sql.attempts_col is None,
                lease_timeout_s=sql.lease_timeout_s,
            )
        async with opool.acquire() as oconn, oconn.transaction():
            records = await lock_due(oconn, sql, skip, self._settings.outbox_max_row_bytes)
            if not records:
                return 0
            claims = await self.store_claims(poll, records)
            claimed_ids = {c.row_id for c in claims}
            await mark_processing(oconn, sql, [r for r in records if r["id_text"] in claimed_ids])
            for row_id in {r["id_text"] for r in records} - claimed_ids:
                error = {"error": f"row exceeds {self._settings.outbox_max_row_bytes} bytes as JSON"}
                await write_row(oconn, sql, row_id, sql.statuses["failed"], error)
        # Only after the owner's commit; lost in a crash, the claim stays on the skip list (safe).
        async with self._pool.acquire() as conn:
            await store.mark_owner_side(conn, claims, credential_id, table)
        return len(claims)

    async def store_claims(self, poll: store.OutboxPoll, records: Sequence[Any]) -> list[store.NewClaim]:
        """Step 1b: record claims and their events in hookyard, committed before the owner's side."""
        config = poll.trigger_config
        credential_id = UUID(str(config["credential_id"]))
        table = str(config["table"])
        async with self._pool.acquire() as conn, conn.transaction():
            failures = await store.failures_of(conn, credential_id, table, [r["id_text"] for r in records])
            rows, too_large = claimed_rows(records, config, failures)
            claims = await store.record_claims(conn, poll, credential_id, table, rows)
            await store.record_refused(conn, poll, credential_id, table, too_large)
        return claims

    async def write_back_all(self) -> int:
        """Step 2 for every workflow with claims due for write-back; returns claims closed."""
        async with self._pool.acquire() as conn:
            due = await store.workflows_to_write_back(conn, 100)
        limit = asyncio.Semaphore(PARALLEL)

        async def one(workflow_id: UUID, owner_id: UUID) -> int:
            async with limit:
                try:
                    async with asyncio.timeout(poll_budget_s(self._bounds)):
                        return await self.write_back(workflow_id, owner_id)
                except Exception as exc:  # recorded on the claims inside; never spread to others
                    log.warning("outbox write-back of workflow %s failed: %s", workflow_id, type(exc).__name__)
                    return 0

        return sum(await asyncio.gather(*(one(w, o) for w, o in due)))

    async def write_back(self, workflow_id: UUID, owner_id: UUID) -> int:
        """Step 2: write the outcomes of a workflow's ended claims into the owner's rows.

        The owner's connection is taken before hookyard's, the order a poll takes them in, so
        polls and write-backs never wait on each other's connections in a circle.
        """
        async with self._pool.acquire() as conn:
            config = await store.trigger_config_of(conn, workflow_id)
        try:
            sql = compile_outbox(config)
            opool = await self.owner_pool(owner_id, config)
            async with opool.acquire() as oconn:
                return await self._write_claims(workflow_id, sql, oconn)
        except Exception as exc:  # the owner's database is down or refuses: retried with backoff
            async with self._pool.acquire() as conn, conn.transaction():
                claims = await store.lock_finished(conn, workflow_id, WRITEBACK_BATCH)
                await store.record_writeback_failed(conn, [c.id for c in claims], self._describe_writeback(exc))
            return 0

    async def _write_claims(self, workflow_id: UUID, sql: OutboxSql, oconn: asyncpg.Connection) -> int:
        async with self._pool.acquire() as conn, conn.transaction():
            claims = await store.lock_finished(conn, workflow_id, WRITEBACK_BATCH)
            if not claims:
                return 0
            results = [result_of(c) for c in claims]
            rows = [(c.row_id, status_of(sql, c), _json(r)) for c, r in zip(claims, results, strict=True)]
            try:
                statement = sql.write_back_many(rows)
                # One statement: the owner's rows are written all or none, then the claims closed.
                await oconn.fetch(statement.sql, *statement.params)
            except (asyncpg.PostgresError, OSError, asyncpg.InterfaceError, TimeoutError) as exc:
                await store.record_writeback_failed(conn, [c.id for c in claims], self._describe_writeback(exc))
                return 0
            closed = await store.record_written_many(conn, workflow_id, claims, results)
        if self._metrics is not None:
            for claim in claims:
                self._metrics.outbox_rows_written.labels(claim.outcome).inc()
        return closed

    def _describe_writeback(self, exc: BaseException) -> str:
        if isinstance(exc, OutboxConfigError | OutboxSqlError):
            return str(exc)[:500]
        return describe_error(exc, None, self._bounds)

    async def _sleep(self, stop: asyncio.Event, running: set[asyncio.Task[int]]) -> None:
        """Until a poll falls due, a wake-up, a poll slot frees, or `stop`."""
        timeout = self._settings.dispatch_poll_interval_s
        with suppress(*db.STORAGE_ERRORS):
            async with self._pool.acquire() as conn:
                due = await store.next_poll_in(conn)
            if due is not None:
                timeout = min(timeout, max(due, 0.05))
        waiters = {asyncio.ensure_future(self._wake.wait()), asyncio.ensure_future(stop.wait())}
        await asyncio.wait(waiters | running, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        for waiter in waiters:
            waiter.cancel()


class _Listeners:
    """LISTEN connections to owners' databases for workflows that name a channel."""

    def __init__(self, poller: OutboxPoller) -> None:
        self._poller = poller
        self._tasks: dict[tuple[UUID, str], asyncio.Task[None]] = {}

    async def refresh(self) -> None:
        """Listen for every active outbox workflow with a channel; stop listening for the rest."""
        async with self._poller.pool.acquire() as conn:
            wanted = await store.listening_workflows(conn)
        keys = {(w.workflow_id, w.channel): w for w in wanted}
        for key in list(self._tasks):
            if key not in keys:
                self._tasks.pop(key).cancel()
        for key, item in keys.items():
            task = self._tasks.get(key)
            if task is None or task.done():
                self._tasks[key] = asyncio.create_task(self._listen(item), name=f"outbox-listen-{key[0]}")

    async def _listen(self, item: store.ListeningWorkflow) -> None:
        poller = self._poller

        def notified(*_: object) -> None:
            asyncio.get_running_loop().create_task(self._poll_now(item.workflow_id))

        while True:
            try:
                target = await poller.target(item.owner_id, item.credential_id)
                conn = await poller.pools.listen_connection(target)
            except Exception as exc:  # the poll records the error; listening retries quietly
                log.info("outbox listener of workflow %s cannot connect: %s", item.workflow_id, type(exc).__name__)
                await asyncio.sleep(10)
                continue
            try:
                await conn.add_listener(item.channel, notified)
                while True:
                    await asyncio.sleep(5)
                    await conn.execute("SELECT 1")
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # lost: reconnect
                log.info("outbox listener of workflow %s lost: %s", item.workflow_id, type(exc).__name__)
            finally:
                with suppress(Exception):
                    await conn.close(timeout=1)

    async def _poll_now(self, workflow_id: UUID) -> None:
        with suppress(Exception):
            async with self._poller.pool.acquire() as conn:
                await store.poll_now(conn, [workflow_id])
            self._poller.wake()

    async def close(self) -> None:
        """Stop every listener."""
        for task in self._tasks.values():
            task.cancel()
        for task in self._tasks.values():
            with suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks.clear()
