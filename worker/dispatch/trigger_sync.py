"""Trigger lifecycle sync: keep outside state (Temporal Schedules, mailbox watches) in step with rows.

Runs inside the dispatcher process as its own task, so a slow or unreachable Temporal never
holds up event resolution. Safe in any number of replicas: rows are leased under
`FOR UPDATE SKIP LOCKED`, and a lease keeps other loops away while the hooks run.

Each pass takes lagging workflows (whose `sync_version` moved past `synced_version`), calls
the trigger type's sync hook with the row as it is now, and records the version reached, or
the error and a retry time (doubling from 1 s to 60 s). Hooks are idempotent and converge to
the current row, so a retry, a duplicate, or a change made while a hook ran is harmless: the
row simply lags again and is synced once more. A workflow that moves to another trigger type
first has the old type's hook undo its state (called as deleted).

Woken by NOTIFY on every change (migration 0005), else polls at the dispatcher's interval, or
sooner when a retry or an expired lease falls due.
"""

from __future__ import annotations

import asyncio
import logging
from contextlib import suppress
from typing import Any

import asyncpg
from temporalio.client import Client
from temporalio.service import RPCError

from runtime.temporal import connect
from schemas import db
from schemas.store import trigger_sync as store
from settings import Settings
from triggers.base import SyncHook, TriggerSyncContext, TriggerSyncError, WorkflowSyncState
from triggers.gmail import NAME as GMAIL_TRIGGER
from triggers.registry import TRIGGERS
from worker.gmail.sync import sync_mailbox
from worker.schedule_cron import schedule as schedule_cron

log = logging.getLogger(__name__)

BATCH = 100
HOOK_TIMEOUT_S = 30.0
# Longer than any hook may take, so two loops never work on one workflow at once.
LEASE_S = 4 * HOOK_TIMEOUT_S
PARALLEL = 8
# The database being unavailable (db.STORAGE_ERRORS), or refusing a statement: the pass is retried.
_STORAGE_ERRORS = (*db.STORAGE_ERRORS, asyncpg.PostgresError)


def retry_delay(attempts: int) -> float:
    """Seconds before the next try after `attempts` failures in a row (1 s doubling to 60 s)."""
    return float(min(2 ** min(attempts, 6), 60))


def error_message(exc: BaseException) -> str:
    """What the owner sees: hook errors verbatim, Temporal's own message, else only the kind."""
    if isinstance(exc, TriggerSyncError):
        message = str(exc)
    elif isinstance(exc, RPCError):
        message = f"Temporal error ({exc.status.name}): {exc.message}"
    elif isinstance(exc, TimeoutError):
        message = f"timed out after {HOOK_TIMEOUT_S:.0f}s"
    elif isinstance(exc, TemporalUnreachable):
        message = str(exc)
    else:
        message = f"unexpected {type(exc).__name__}"
    return message[:500]


class TemporalUnreachable(RuntimeError):
    """No connection to Temporal could be made; every hook needs one."""


# Hooks that speak to Temporal workflows of the worker's own live here, not in the trigger
# type (triggers describe and match; they never import the worker).
WORKER_HOOKS: dict[str, SyncHook] = {**schedule_cron.SYNC_HOOKS, GMAIL_TRIGGER: sync_mailbox}


def sync_hook(trigger_type: str) -> SyncHook | None:
    """The sync hook of a trigger type, if it keeps outside state."""
    trigger = TRIGGERS.get(trigger_type)
    if trigger is None:
        return None
    return WORKER_HOOKS.get(trigger_type) or trigger.sync


def hooked_types() -> list[str]:
    """Trigger types that keep outside state."""
    return sorted(name for name in TRIGGERS if sync_hook(name) is not None)


def planned_calls(row: Any) -> list[tuple[SyncHook, WorkflowSyncState]]:
    """The hook calls that converge one claimed row, in order."""
    calls: list[tuple[SyncHook, WorkflowSyncState]] = []
    before = row["synced_trigger_type"]
    previous_config = row["synced_trigger_config"]
    old = sync_hook(before) if before else None
    if old is not None and before != row["trigger_type"]:
        undo = WorkflowSyncState(
            id=row["id"],
            owner_id=row["owner_id"],
            trigger_type=before,
            trigger_config=previous_config or {},
            active=False,
            deleted=True,
            previous_config=previous_config,
        )
        calls.append((old, undo))
    current = sync_hook(row["trigger_type"])
    if current is not None:
        state = WorkflowSyncState(
            id=row["id"],
            owner_id=row["owner_id"],
            trigger_type=row["trigger_type"],
            trigger_config=row["trigger_config"],
            active=row["active"] and not row["deleted"],
            deleted=row["deleted"],
            previous_config=previous_config if before == row["trigger_type"] else None,
        )
        calls.append((current, state))
    return calls


class TriggerSyncer:
    """Converges the outside state of workflows whose trigger definition changed."""

    def __init__(self, pool: asyncpg.Pool, settings: Settings, client: Client | None = None) -> None:
        self._pool = pool
        self._settings = settings
        self._client = client
        self._wake = asyncio.Event()
        self._hooked = hooked_types()
        self._more = False

    async def run(self, stop: asyncio.Event) -> None:
        """Sync until `stop` is set; woken at once by workflow changes, else polls."""
        listener = asyncio.create_task(self._listen(), name="trigger-sync-listener")
        try:
            while not stop.is_set():
                self._wake.clear()
                busy = False
                try:
                    await self.sync_once()
                    busy = self._more
                except _STORAGE_ERRORS as exc:
                    log.warning("trigger sync pass failed: %s", type(exc).__name__)
                except Exception:  # never fatal: this loop must outlive whatever one pass met
                    log.exception("trigger sync pass failed unexpectedly")
                if not busy:
                    await self._sleep(stop)
        finally:
            listener.cancel()
            with suppress(asyncio.CancelledError):
                await listener

    async def sync_once(self) -> int:
        """One batch: settle or sync lagging workflows; returns how many were taken."""
        async with self._pool.acquire() as conn:
            # Claims are capped at what runs at once, so a row never waits out its lease.
            settled, rows, self._more = await store.claim(conn, self._hooked, BATCH, LEASE_S, max_hooked=PARALLEL)
        if not rows:
            return settled
        try:
            client = await self._ensure_client()
        except TemporalUnreachable as exc:
            for row in rows:
                await self._record(row, exc)
            return settled + len(rows)
        ctx = TriggerSyncContext(temporal=client, settings=self._settings.for_triggers(), pool=self._pool)
        limit = asyncio.Semaphore(PARALLEL)

        async def one(row: Any) -> None:
            async with limit:
                await self._sync_row(ctx, row)

        results = await asyncio.gather(*(one(row) for row in rows), return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException):
                raise result  # storage trouble while recording; the leases expire and it is retried
        return settled + len(rows)

    async def _sync_row(self, ctx: TriggerSyncContext, row: Any) -> None:
        try:
            for hook, state in planned_calls(row):
                await asyncio.wait_for(hook(ctx, state), HOOK_TIMEOUT_S)
        except Exception as exc:  # any failure of a hook is recorded and retried, never fatal
            await self._record(row, exc)
            return
        keeps_state = sync_hook(row["trigger_type"]) is not None and not row["deleted"]
        async with self._pool.acquire() as conn:
            await store.record_synced(
                conn,
                row["id"],
                row["sync_version"],
                row["trigger_type"] if keeps_state else None,
                row["trigger_config"] if keeps_state else None,
            )

    async def _record(self, row: Any, exc: BaseException) -> None:
        message = error_message(exc)
        delay = retry_delay(row["sync_attempts"])
        log.warning("trigger sync of workflow %s failed, retrying in %.0fs: %s", row["id"], delay, message)
        async with self._pool.acquire() as conn:
            await store.record_failed(conn, row["id"], row["sync_version"], message, delay)

    async def _ensure_client(self) -> Client:
        if self._client is None:
            try:
                self._client = await asyncio.wait_for(connect(self._settings), 5)
            except Exception as exc:  # the SDK raises RuntimeError for transport failures
                raise TemporalUnreachable(f"cannot reach Temporal at {self._settings.temporal_address}") from exc
        return self._client

    async def _sleep(self, stop: asyncio.Event) -> None:
        timeout = self._settings.dispatch_poll_interval_s
        with suppress(*_STORAGE_ERRORS):
            async with self._pool.acquire() as conn:
                due = await store.next_due_in(conn)
            if due is not None:
                timeout = min(timeout, max(due, 0.05))
        waiters = [asyncio.ensure_future(self._wake.wait()), asyncio.ensure_future(stop.wait())]
        await asyncio.wait(waiters, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        for waiter in waiters:
            waiter.cancel()

    async def _listen(self) -> None:
        # After a reconnection anything may have changed unseen: look at once.
        await db.listen(self._settings.database_url, store.SYNC_CHANNEL, lambda _: self._wake.set(), self._wake.set)
