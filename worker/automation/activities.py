"""The batch activity: attempt each execution once and record every outcome in PostgreSQL.

Maps action errors to decisions once: permanent -> failed; retryable -> retried by the
workflow after a delay from the workflow's retry policy, until its attempts are used up.
Action types with a hand-over (newsletters) are not run here: the hand-over starts a workflow
of their own, which records the outcome; the execution stays `running` until then.
"""

from __future__ import annotations

import asyncio
import contextvars
import json
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from contextlib import suppress
from dataclasses import dataclass
from datetime import timedelta
from functools import partial
from typing import Any
from uuid import UUID

import asyncpg
import httpx
import orjson
from temporalio import activity

from actions.base import ActionContext, RateLimiter
from actions.egress import EgressPolicy
from actions.errors import PermanentActionError, RetryableActionError
from actions.registry import UnknownAction, get_action
from actions.templating import DEFAULT_MAX_RENDERED_BYTES
from oauth.crypto import Keyring
from oauth.links import link_token
from oauth.vault import Vault
from schemas.db import is_storage_error
from schemas.sanitize import strip_nul
from schemas.store import executions as store
from schemas.store.signing import load_signing_secret
from schemas.store.telemetry import traceparents_for_executions
from telemetry.logs import log_context
from telemetry.metrics import Metrics, record_failover
from telemetry.tracing import NOOP, Tracing
from worker.automation.contract import RUN_BATCH_ACTIVITY, BatchInput, Outcome
from worker.automation.credentials import OwnerCredentials
from worker.automation.retry import next_delay

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
        max_rendered_bytes: int = DEFAULT_MAX_RENDERED_BYTES,
        egress: EgressPolicy | None = None,
    ) -> None:
        self._pool = pool
        self._max_rendered_bytes = max_rendered_bytes
        self._api_bases = dict(api_bases or {})
        self._egress = EgressPolicy() if egress is None else egress
        self._handoffs = dict(handoffs or {})
        self.metrics = Metrics() if metrics is None else metrics
        self._tracing = tracing
        self._http = http
        self._keyring = keyring
        self._vault = vault or Vault(pool, keyring, http)
        self._limiter = limiter
        # One group commit of outcomes for every batch this process runs.
        self._outcomes = OutcomeWriter(pool)

    @activity.defn(name=RUN_BATCH_ACTIVITY)
    async def run_batch(self, batch: BatchInput) -> list[Outcome]:
        """Attempt every execution of the batch concurrently; finished ones are skipped.

        An attempt whose action finished is recorded before anything can run it again: its
        outcome is kept in the heartbeat details at once and written with retries for as long
        as the activity lives. A retry of this activity (worker lost, activity cancelled)
        writes and reports the outcomes kept there instead of running those actions again.
        """
        info = activity.info()
        kept = KeptOutcomes.from_details(info.heartbeat_details, batch.execution_ids)
        beat = asyncio.create_task(_heartbeat(info.heartbeat_timeout, kept))
        try:
            recovered = kept.unwritten()
            if recovered:
                log.warning("recording %d outcomes kept by an earlier attempt of this batch", len(recovered))
                # Retried for as long as the activity lives: no deadline.
                await asyncio.gather(*(self._outcomes.submit(r, deadline_s=None) for r in recovered))
                kept.mark_written(recovered)
            async with self._pool.acquire() as conn:
                rows = await store.claim_for_run(
                    conn,
                    [UUID(i) for i in batch.execution_ids if i not in kept],
                    info.workflow_id or "",
                    info.workflow_run_id or "",
                )
                # Only when tracing: each attempt's span continues its own event's trace.
                traces = (
                    await traceparents_for_executions(conn, [r["id"] for r in rows]) if self._tracing.enabled else {}
                )
            # Each outcome is written the moment its attempt ends, so a batch retried after a
            # crash re-runs only the attempts that had not finished. The task group cancels
            # every attempt if the activity fails or is cancelled: none outlives it.
            unrecorded: list[UUID] = []
            async with asyncio.TaskGroup() as attempts:
                for row in rows:
                    attempts.create_task(self._attempt_and_record(row, kept, unrecorded, traces.get(row["id"])))
                    # An attempt renders its templates before its first await: one at a time,
                    # so a batch of large renders cannot keep the heartbeat from running.
                    await asyncio.sleep(0)
            if unrecorded:
                # Every sibling has finished; the retry writes these from the heartbeat details.
                raise OutcomesNotRecorded(f"outcomes of {len(unrecorded)} executions were not recorded")
        finally:
            beat.cancel()
            with suppress(asyncio.CancelledError):
                await beat
        return [kept.outcome(i) for i in batch.execution_ids]

    async def _attempt_and_record(
        self, row: asyncpg.Record, kept: KeptOutcomes, unrecorded: list[UUID], traceparent: str | None = None
    ) -> None:
        started = time.perf_counter()
        try:
            ids = {"execution_id": row["id"], "workflow_id": row["workflow_id"], "event_id": row["event_id"]}
            attributes = {"hookyard.action": row["action_type"], "hookyard.execution_id": str(row["id"])}
            with log_context(**ids), self._tracing.stored_span("hookyard.action", traceparent, attributes):
                record = await self._attempt(row)
                record["result"] = strip_nul(record["result"])
                record["error"] = strip_nul(record["error"])
        except Exception as exc:  # building its context or sanitising its result: this execution only
            log.exception("execution %s: unexpected error around its attempt", row["id"])
            record = self._retry_or_fail(row, f"unexpected error ({type(exc).__name__})", None, None)
        duration = time.perf_counter() - started
        # Kept before the write: if the write never lands, a retried batch still knows.
        kept.add(record)
        try:
            await self._write_shielded(record)
        except asyncio.CancelledError:
            raise
        except Exception:  # refused even without its result: never cancel the siblings for it
            log.exception("execution %s: outcome not recorded; kept for the batch's retry", row["id"])
            unrecorded.append(row["id"])
            return
        kept.mark_written([record])
        if not record.get("handed_off"):
            self.metrics.record_attempt(row["action_type"], record["status"], duration)

    async def _write_shielded(self, record: dict[str, Any]) -> None:
        """Write one outcome with the next group commit; if the activity is cancelled meanwhile
        (its workflow terminated, say), the write still goes on for up to
        KEPT_WRITE_AFTER_CANCEL_S, since no retry of this activity may ever come to write it from
        the heartbeat details. Past that deadline it raises TimeoutError."""
        write = self._outcomes.submit(record, deadline_s=KEPT_WRITE_AFTER_CANCEL_S)
        async with asyncio.timeout(KEPT_WRITE_AFTER_CANCEL_S):  # no task of its own, unlike wait_for
            await asyncio.shield(write)

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
                max_rendered_bytes=self._max_rendered_bytes,
                egress=self._egress,
                sign_connect_link=partial(link_token, self._keyring),
            )
            result = await action.run(ctx, row["action_config"])
        except (PermanentActionError, UnknownAction) as exc:
            return _record(execution_id, "failed", str(exc), getattr(exc, "result", None))
        except RetryableActionError as exc:
            return self._retry_or_fail(row, str(exc), exc.retry_after_s, exc.result)
        except Exception as exc:  # a bug or an unexpected library error: retry, never leak details
            if is_storage_error(exc):  # before or beside the action (signing secret, credentials)
                log.warning("execution %s: database unavailable (%s)", execution_id, type(exc).__name__)
                return self._retry_or_fail(row, "database unavailable", None, None)
            log.exception("execution %s: unexpected error", execution_id)
            return self._retry_or_fail(row, f"unexpected error ({type(exc).__name__})", None, None)
        return _record(execution_id, "succeeded", None, result)

    @staticmethod
    def _retry_or_fail(
        row: asyncpg.Record, message: str, retry_after_s: float | None, result: dict[str, Any] | None
    ) -> dict[str, Any]:
        try:
            delay = next_delay(row["retry_policy"], row["attempts"], retry_after_s)
        except Exception:  # a policy that cannot be applied: this execution fails, no other
            log.exception("execution %s: retry policy unusable", row["id"])
            return _record(row["id"], "failed", f"{message} (and its retry policy could not be applied)", None)
        if delay is None:
            return _record(row["id"], "failed", f"gave up after {row['attempts']} attempts: {message}", result)
        record = _record(row["id"], "running", message, result)
        record["retry_in_s"] = delay
        return record


# A group commit takes up to this many outcomes, waiting this long for more when fewer are queued.
OUTCOME_GROUP_MAX = 100
OUTCOME_GROUP_LINGER_S = 0.002


@dataclass(slots=True)
class _Pending:
    record: dict[str, Any]
    future: asyncio.Future[None]
    deadline: float | None  # loop time after which the write is given up


class OutcomeWriter:
    """Group commit of attempt outcomes for every batch running in this worker process.

    `submit` queues an outcome and returns a future that resolves once it is committed. One
    flusher writes what is queued in one statement (up to OUTCOME_GROUP_MAX outcomes, waiting
    OUTCOME_GROUP_LINGER_S for more when fewer are queued), so a write costs a round trip per
    group rather than per attempt. Storage errors are retried with backoff (0.2 s doubling to
    5 s) until each outcome is written or its deadline passes; a group PostgreSQL refuses for
    any other reason is written again one outcome at a time, so one refused outcome fails
    alone (and is then retried once without its result) and never holds up its group.
    """

    def __init__(
        self, pool: asyncpg.Pool, max_group: int = OUTCOME_GROUP_MAX, linger_s: float = OUTCOME_GROUP_LINGER_S
    ) -> None:
        self._pool = pool
        self._max_group = max_group
        self._linger_s = linger_s
        self._queue: list[_Pending] = []
        self._flusher: asyncio.Task[None] | None = None

    def submit(self, record: dict[str, Any], deadline_s: float | None) -> asyncio.Future[None]:
        """Queue one outcome; the future resolves when it is committed, or fails with TimeoutError
        past `deadline_s` (None: no deadline) or with the error PostgreSQL refused it with."""
        loop = asyncio.get_running_loop()
        deadline = None if deadline_s is None else loop.time() + deadline_s
        pending = _Pending(record, loop.create_future(), deadline)
        self._queue.append(pending)
        if self._flusher is None or self._flusher.done():
            # A context of its own: not the activity's (its log ids, its cancellation).
            self._flusher = loop.create_task(self._flush(), context=contextvars.Context())
        return pending.future

    async def _flush(self) -> None:
        while self._queue:
            if len(self._queue) < self._max_group:
                await asyncio.sleep(self._linger_s)
            group, self._queue = self._queue[: self._max_group], self._queue[self._max_group :]
            try:
                await self._write(group)
            except Exception as exc:  # a bug here must not strand the waiting attempts
                log.exception("writing a group of %d outcomes failed", len(group))
                _settle(group, exc)

    async def _write(self, group: list[_Pending]) -> None:
        """Write a group, retrying storage errors with backoff until written or past deadline."""
        delay = WRITE_RETRY_FIRST_S
        stripped = False
        while True:
            group = _live(group, asyncio.get_running_loop().time())
            if not group:
                return
            try:
                async with self._pool.acquire() as conn:
                    await store.record_outcomes(conn, [p.record for p in group])
            except Exception as exc:
                if not is_storage_error(exc):
                    if len(group) > 1:  # one refused outcome spoils its group: each alone
                        for pending in group:
                            await self._write([pending])
                        return
                    records = None if stripped else _unstorable([group[0].record], exc)
                    if records is None:
                        _settle(group, exc)
                        return
                    group[0].record, stripped = records[0], True  # once: the next failure is final
                    continue
                log.warning(
                    "%d outcomes not recorded yet (%s); retrying in %.1fs", len(group), type(exc).__name__, delay
                )
            else:
                _settle(group, None)
                return
            await asyncio.sleep(delay)
            delay = min(delay * 2, WRITE_RETRY_MAX_S)


def _live(group: list[_Pending], now: float) -> list[_Pending]:
    """The outcomes of a group still waiting; those past their deadline are given up."""
    live = []
    for pending in group:
        if pending.future.done():
            continue
        if pending.deadline is not None and now > pending.deadline:
            pending.future.set_exception(TimeoutError("outcome not recorded before its deadline"))
            pending.future.exception()  # retrieved: the waiter may be gone (its activity cancelled)
            continue
        live.append(pending)
    return live


def _settle(group: list[_Pending], exc: Exception | None) -> None:
    for pending in group:
        if pending.future.done():
            continue
        if exc is None:
            pending.future.set_result(None)
        else:
            pending.future.set_exception(exc)
            pending.future.exception()  # retrieved: the waiter may be gone (its activity cancelled)


def _template_context(row: asyncpg.Record) -> dict[str, Any]:
    return {
        "trigger": row["trigger_data"],
        "execution": {"id": str(row["id"]), "attempt": row["attempts"]},
        "workflow": {"id": str(row["workflow_id"]), "name": row["workflow_name"]},
    }


def _record(execution_id: UUID, status: str, error: str | None, result: Any) -> dict[str, Any]:
    return {"id": execution_id, "status": status, "error": error, "result": result, "retry_in_s": None}


def _outcome(record: Mapping[str, Any]) -> Outcome:
    if record.get("handed_off"):
        return Outcome(str(record["id"]), "handed_off")
    if record["status"] == "running":
        return Outcome(str(record["id"]), "retry", record["retry_in_s"])
    return Outcome(str(record["id"]), record["status"])


def _unstorable(records: list[dict[str, Any]], exc: Exception) -> list[dict[str, Any]] | None:
    """The outcomes again without what PostgreSQL refused (their results); None if already tried."""
    if all(r.get("result") is None for r in records):
        return None
    log.error("outcomes of %s refused (%s); recording them without their results", [r["id"] for r in records], exc)
    note = f"the result could not be stored ({type(exc).__name__})"
    return [{**r, "result": None, "error": f"{r['error']}; {note}" if r.get("error") else note} for r in records]


class KeptOutcomes:
    """Outcomes of this batch's finished attempts, carried in the activity's heartbeat details.

    Details stay small and hold no secrets: ids, status, retry delay, a capped error and a
    capped result excerpt (results are what the API shows anyway; Temporal payloads are
    encrypted). Written outcomes keep only what the workflow needs to be told.
    """

    def __init__(self, batch_ids: Sequence[str]) -> None:
        self._batch = set(batch_ids)
        self._kept: dict[str, dict[str, Any]] = {}

    @classmethod
    def from_details(cls, details: Sequence[Any], batch_ids: Sequence[str]) -> KeptOutcomes:
        """What an earlier attempt of this activity kept (nothing on the first attempt)."""
        kept = cls(batch_ids)
        items = details[0] if details and isinstance(details[0], list) else []
        for item in items:
            if isinstance(item, dict) and item.get("id") in kept._batch and item.get("status") in _KEPT_STATUSES:
                kept._kept[item["id"]] = item
        return kept

    def __contains__(self, execution_id: object) -> bool:
        return execution_id in self._kept

    def add(self, record: Mapping[str, Any]) -> None:
        """Keep a finished attempt's outcome and send it with a heartbeat now."""
        self._kept[str(record["id"])] = _compact(record)
        activity.heartbeat(self.details())

    def mark_written(self, records: Sequence[Mapping[str, Any]]) -> None:
        """These outcomes are in PostgreSQL: keep only what the workflow must be told."""
        for record in records:
            item = self._kept[str(record["id"])]
            fields = {k: item.get(k) for k in ("id", "status", "retry_in_s", "handed_off")}
            self._kept[str(record["id"])] = {**fields, "written": True}

    def unwritten(self) -> list[dict[str, Any]]:
        """Kept outcomes not yet known to be written, as records for `record_outcomes`."""
        return [{**item, "id": UUID(item["id"])} for item in self._kept.values() if not item.get("written")]

    def outcome(self, execution_id: str) -> Outcome:
        """What to tell the workflow about one execution of the batch."""
        item = self._kept.get(execution_id)
        return Outcome(execution_id, "skipped") if item is None else _outcome(item)

    def details(self) -> list[dict[str, Any]]:
        """The heartbeat details: one list of kept outcomes."""
        return list(self._kept.values())


_KEPT_STATUSES = ("succeeded", "failed", "cancelled", "running")
KEPT_ERROR_CHARS = 1000
# Sizes are measured as Temporal's JSON converter writes them (non-ASCII escaped, up to 12
# bytes a character), so 100 kept outcomes stay far below its 2 MB payload limit.
KEPT_ERROR_BYTES = 2048
KEPT_WRITE_AFTER_CANCEL_S = 30.0
# Results up to this size are kept whole; larger ones as an excerpt, so a batch's heartbeat
# stays well below Temporal's payload limits (100 executions x ~4 KiB).
KEPT_RESULT_CHARS = 4096
KEPT_EXCERPT_CHARS = 2048
WRITE_RETRY_FIRST_S = 0.2
WRITE_RETRY_MAX_S = 5.0


def _compact(record: Mapping[str, Any]) -> dict[str, Any]:
    result = record.get("result")
    try:
        encoded = json.dumps(result) if result is not None else ""  # escaped as Temporal writes it
    except (TypeError, ValueError, RecursionError):  # not JSON: keep none rather than fail the batch
        result, encoded = None, ""
    if len(encoded) > KEPT_RESULT_CHARS:
        result = {"excerpt": _ascii_capped(orjson.dumps(result).decode(), KEPT_EXCERPT_CHARS), "truncated": True}
    error = record.get("error")
    return {
        "id": str(record["id"]),
        "status": record["status"],
        "error": _ascii_capped(error[:KEPT_ERROR_CHARS], KEPT_ERROR_BYTES) if isinstance(error, str) else None,
        "result": result,
        "retry_in_s": record.get("retry_in_s"),
        "handed_off": bool(record.get("handed_off")),
    }


def _ascii_capped(text: str, limit: int) -> str:
    """The longest prefix (halving) whose JSON encoding, non-ASCII escaped, fits in `limit` bytes."""
    cut = text[:limit]
    while len(json.dumps(cut)) > limit:
        cut = cut[: len(cut) // 2]
    return cut


class OutcomesNotRecorded(RuntimeError):
    """Some finished attempts' outcomes could not be written; the retry writes them from the
    heartbeat details (the actions are not run again)."""


async def _heartbeat(heartbeat_timeout: timedelta | None, kept: KeptOutcomes) -> None:
    """Heartbeat well inside the timeout so a lost worker is noticed and the batch retried.

    Every second (or a fifth of the timeout): the worker's throttle decides what is sent. Every
    beat carries the outcomes kept so far (Temporal keeps the latest for the next attempt).
    """
    interval = min(1.0, heartbeat_timeout.total_seconds() / 5) if heartbeat_timeout else 10.0
    while True:
        activity.heartbeat(kept.details())
        await asyncio.sleep(interval)
