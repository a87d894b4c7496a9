"""The batch activity: attempt each execution once and record every outcome in PostgreSQL.

Maps action errors to decisions once: permanent -> failed; retryable -> retried by the
workflow after a delay from the workflow's retry policy, until its attempts are used up.
Action types with a hand-over (newsletters) are not run here: the hand-over starts a workflow
of their own, which records the outcome; the execution stays `running` until then.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from contextlib import suppress
from datetime import timedelta
from functools import partial
from typing import Any
from uuid import UUID

import asyncpg
import httpx
from temporalio import activity

from actions.base import ActionContext, RateLimiter
from actions.errors import PermanentActionError, RetryableActionError
from actions.registry import UnknownAction, get_action
from oauth.crypto import Keyring
from schemas.sanitize import strip_nul
from schemas.store import executions as store
from schemas.store.signing import load_signing_secret
from telemetry.logs import log_context
from telemetry.metrics import Metrics, record_failover
from telemetry.tracing import NOOP, Tracing
from worker.contracts import RUN_BATCH_ACTIVITY, BatchInput, Outcome
from worker.credentials import OwnerCredentials
from worker.retry import next_delay
from worker.vault import Vault

log = logging.getLogger(__name__)

# Takes a claimed execution row elsewhere and returns the execution's result meanwhile.
HandOff = Callable[[asyncpg.Record], Awaitable[dict[str, Any]]]


class AutomationActivities:
    """Holds the clients the activity uses; one instance per worker process."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        http: httpx.AsyncClient,
        keyring: Keyring,
        vault: Vault | None = None,
        limiter: RateLimiter | None = None,
        metrics: Metrics | None = None,
        tracing: Tracing = NOOP,
        handoffs: Mapping[str, HandOff] | None = None,
        api_bases: Mapping[str, str] | None = None,
    ) -> None:
        self._pool = pool
        self._api_bases = dict(api_bases or {})
        self._handoffs = dict(handoffs or {})
        self.metrics = Metrics() if metrics is None else metrics
        self._tracing = tracing
        self._http = http
        self._keyring = keyring
        self._vault = vault or Vault(pool, keyring, http)
        self._limiter = limiter

    @activity.defn(name=RUN_BATCH_ACTIVITY)
    async def run_batch(self, batch: BatchInput) -> list[Outcome]:
        """Attempt every execution of the batch concurrently; finished ones are skipped."""
        info = activity.info()
        beat = asyncio.create_task(_heartbeat(info.heartbeat_timeout))
        try:
            async with self._pool.acquire() as conn:
                rows = await store.claim_for_run(
                    conn, [UUID(i) for i in batch.execution_ids], info.workflow_id or "", info.workflow_run_id or ""
                )
            # Each outcome is written the moment its attempt ends, so a batch retried after a
            # crash re-runs only the attempts that had not finished.
            records = await asyncio.gather(*(self._attempt_and_record(row) for row in rows))
        finally:
            beat.cancel()
            with suppress(asyncio.CancelledError):
                await beat
        outcomes = {r["id"]: _outcome(r) for r in records}
        return [outcomes.get(UUID(i), Outcome(i, "skipped")) for i in batch.execution_ids]

    async def _attempt_and_record(self, row: asyncpg.Record) -> dict[str, Any]:
        ids = {"execution_id": row["id"], "workflow_id": row["workflow_id"], "event_id": row["event_id"]}
        attributes = {"hookyard.action": row["action_type"], "hookyard.execution_id": str(row["id"])}
        with log_context(**ids), self._tracing.span("hookyard.action", attributes):
            started = time.perf_counter()
            record = await self._attempt(row)
            duration = time.perf_counter() - started
            record["result"] = strip_nul(record["result"])
            record["error"] = strip_nul(record["error"])
            async with self._pool.acquire() as conn:
                await store.record_outcomes(conn, [record])
        if not record.get("handed_off"):
            self.metrics.record_attempt(row["action_type"], record["status"], duration)
        return record

    async def _attempt(self, row: asyncpg.Record) -> dict[str, Any]:
        execution_id = row["id"]
        try:
            hand_off = self._handoffs.get(row["action_type"])
            if hand_off is not None:
                return {**_record(execution_id, "running", None, await hand_off(row)), "handed_off": True}
            action = get_action(row["action_type"])
            secret = None
            if action.wants_signing_secret(row["action_config"]):
                async with self._pool.acquire() as conn:
                    secret = await load_signing_secret(conn, self._keyring, row["owner_id"], row["workflow_id"])
            ctx = ActionContext(
                http=self._http,
                execution_id=str(execution_id),
                attempt=row["attempts"],
                template_context=_template_context(row),
                signing_secret=secret,
                owner_id=str(row["owner_id"]),
                credential_id=None if row["credential_id"] is None else str(row["credential_id"]),
                credentials=OwnerCredentials(self._vault, row["owner_id"]),
                limiter=self._limiter,
                record_failover=partial(record_failover, self.metrics),
                api_bases=self._api_bases,
            )
            result = await action.run(ctx, row["action_config"])
        except (PermanentActionError, UnknownAction) as exc:
            return _record(execution_id, "failed", str(exc), getattr(exc, "result", None))
        except RetryableActionError as exc:
            return self._retry_or_fail(row, str(exc), exc.retry_after_s, exc.result)
        except Exception as exc:  # a bug or an unexpected library error: retry, never leak details
            log.exception("execution %s: unexpected error", execution_id)
            return self._retry_or_fail(row, f"unexpected error ({type(exc).__name__})", None, None)
        return _record(execution_id, "succeeded", None, result)

    @staticmethod
    def _retry_or_fail(
        row: asyncpg.Record, message: str, retry_after_s: float | None, result: dict[str, Any] | None
    ) -> dict[str, Any]:
        delay = next_delay(row["retry_policy"], row["attempts"], retry_after_s)
        if delay is None:
            return _record(row["id"], "failed", f"gave up after {row['attempts']} attempts: {message}", result)
        record = _record(row["id"], "running", message, result)
        record["retry_in_s"] = delay
        return record


def _template_context(row: asyncpg.Record) -> dict[str, Any]:
    return {
        "trigger": row["trigger_data"],
        "execution": {"id": str(row["id"]), "attempt": row["attempts"]},
        "workflow": {"id": str(row["workflow_id"]), "name": row["workflow_name"]},
    }


def _record(execution_id: UUID, status: str, error: str | None, result: Any) -> dict[str, Any]:
    return {"id": execution_id, "status": status, "error": error, "result": result, "retry_in_s": None}


def _outcome(record: dict[str, Any]) -> Outcome:
    if record.get("handed_off"):
        return Outcome(str(record["id"]), "handed_off")
    if record["status"] == "running":
        return Outcome(str(record["id"]), "retry", record["retry_in_s"])
    return Outcome(str(record["id"]), record["status"])


async def _heartbeat(heartbeat_timeout: timedelta | None) -> None:
    """Heartbeat well inside the timeout so a lost worker is noticed and the batch retried.

    Every second (or a fifth of the timeout): the worker's throttle decides what is sent.
    """
    interval = min(1.0, heartbeat_timeout.total_seconds() / 5) if heartbeat_timeout else 10.0
    while True:
        activity.heartbeat()
        await asyncio.sleep(interval)
