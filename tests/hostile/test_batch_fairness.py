"""One batch cannot starve its own heartbeat, and one unwritable outcome cannot cut its siblings off."""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import json
import time
import uuid
from datetime import timedelta
from typing import Any

import asyncpg
import httpx
import pytest
from temporalio.testing import ActivityEnvironment

from actions import registry
from actions.base import ActionContext, ActionType
from oauth.crypto import Keyring
from schemas.store import executions as store
from tests.conftest import Owner, Receiver
from tests.factories import create_endpoint, create_workflow
from tests.hostile.test_storage_faults import _queued, _status
from worker.automation.activities import AutomationActivities, KeptOutcomes, OutcomesNotRecorded, _compact
from worker.automation.contract import BatchInput, Outcome

pytestmark = pytest.mark.integration

BLOCK_S = 0.4


async def _hog(ctx: ActionContext, config: object) -> dict[str, Any]:
    time.sleep(BLOCK_S)  # a render of a large template: CPU before the first await
    await asyncio.sleep(0)  # then the request: the loop is free again
    return {"ok": True}


async def test_a_batch_of_cpu_heavy_attempts_keeps_heartbeating(
    pool: asyncpg.Pool, keyring: Keyring, owner: Owner, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(registry.ACTIONS, "test.hog", ActionType("test.hog", "cpu", {}, _hog))  # type: ignore[index]
    endpoint = await create_endpoint(owner.client)
    workflow = await create_workflow(owner.client, endpoint["id"], receiver.url + "/hog")
    async with pool.acquire() as conn:
        await conn.execute("UPDATE workflows SET action_type = 'test.hog' WHERE id = $1", uuid.UUID(workflow["id"]))
    batch = [await _queued(pool, owner, workflow["id"]) for _ in range(12)]
    beats: list[float] = []
    env = ActivityEnvironment()
    env.info = dataclasses.replace(env.info, heartbeat_timeout=timedelta(seconds=5))
    env.on_heartbeat = lambda *_: beats.append(time.monotonic())
    async with httpx.AsyncClient() as http:
        started = time.monotonic()
        outcomes = await env.run(AutomationActivities(pool, http, keyring).run_batch, BatchInput(workflow["id"], batch))
    assert outcomes == [Outcome(i, "succeeded") for i in batch]
    marks = [started, *beats]
    # 12 x 0.4 s of CPU: without yielding, the first beat after the start waits for all of it.
    assert max(b - a for a, b in itertools.pairwise(marks)) < 3 * BLOCK_S + 1.0


async def test_an_outcome_the_database_refuses_does_not_cancel_its_siblings(
    pool: asyncpg.Pool, keyring: Keyring, owner: Owner, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    endpoint = await create_endpoint(owner.client)
    path = f"/refused/{uuid.uuid4().hex}"
    workflow = await create_workflow(owner.client, endpoint["id"], receiver.url + path)
    refused, sibling = await _queued(pool, owner, workflow["id"]), await _queued(pool, owner, workflow["id"])
    record_outcomes = store.record_outcomes

    async def refuse_one(conn: asyncpg.Connection, outcomes: list[dict[str, Any]]) -> None:
        if any(str(o["id"]) == refused for o in outcomes):
            raise asyncpg.exceptions.CheckViolationError("refused")  # not a storage error
        await record_outcomes(conn, outcomes)

    monkeypatch.setattr(store, "record_outcomes", refuse_one)
    env = ActivityEnvironment()
    details: list[Any] = []
    env.on_heartbeat = lambda *args: details.append(args)
    async with httpx.AsyncClient() as http:
        with pytest.raises(OutcomesNotRecorded):
            await env.run(
                AutomationActivities(pool, http, keyring).run_batch, BatchInput(workflow["id"], [refused, sibling])
            )
    # The sibling ran to its end and was recorded; the refused one is kept for the retry.
    assert (await _status(pool, sibling))["status"] == "succeeded"
    assert refused in KeptOutcomes.from_details([list(details[-1][0])], [refused, sibling])


def test_kept_outcomes_stay_small_in_the_encoding_temporal_uses() -> None:
    kept = KeptOutcomes([str(n) for n in range(100)])
    emoji = "\U0001f600" * 2048
    for n in range(100):
        record = {"id": str(n), "status": "succeeded", "error": emoji, "result": {"response_body": emoji}}
        kept._kept[str(n)] = _compact(record)
    assert len(json.dumps(kept.details())) < 1_000_000
