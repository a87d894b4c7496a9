"""Outcomes of a batch are written by a group commit, each recorded before the batch reports it."""

from __future__ import annotations

import uuid
from typing import Any

import asyncpg
import httpx
import pytest
from temporalio.testing import ActivityEnvironment

from oauth.crypto import Keyring
from schemas.store import executions as store
from tests.conftest import Owner, Receiver
from tests.factories import create_endpoint, create_workflow
from tests.hostile.test_storage_faults import _queued, _status
from worker.automation.activities import AutomationActivities
from worker.automation.contract import BatchInput, Outcome

pytestmark = pytest.mark.integration


async def test_a_batch_writes_its_outcomes_in_fewer_statements_than_attempts_and_all_before_it_reports(
    pool: asyncpg.Pool, keyring: Keyring, owner: Owner, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    endpoint = await create_endpoint(owner.client)
    workflow = await create_workflow(owner.client, endpoint["id"], receiver.url + f"/group/{uuid.uuid4().hex}")
    batch = [await _queued(pool, owner, workflow["id"]) for _ in range(10)]
    record_outcomes = store.record_outcomes
    statements: list[int] = []

    async def counted(conn: asyncpg.Connection, outcomes: list[dict[str, Any]]) -> None:
        statements.append(len(outcomes))
        await record_outcomes(conn, outcomes)

    monkeypatch.setattr(store, "record_outcomes", counted)
    async with httpx.AsyncClient() as http:
        outcomes = await ActivityEnvironment().run(
            AutomationActivities(pool, http, keyring).run_batch, BatchInput(workflow["id"], batch)
        )
    assert outcomes == [Outcome(i, "succeeded") for i in batch]
    assert sum(statements) == 10 and len(statements) < 10
    assert [(await _status(pool, i))["status"] for i in batch] == ["succeeded"] * 10
