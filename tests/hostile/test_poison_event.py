"""One event that cannot be resolved is rejected, explained and skipped; other owners' events run.

"Cannot be resolved" means any exception, not just known ones: here a trigger whose data
raises, and trigger data PostgreSQL cannot store (which fails the whole batch transaction).
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Callable
from typing import Any, cast

import httpx
import pytest

from schemas.store import events as event_store
from tests.conftest import Owner, Receiver, wait_for
from tests.factories import create_endpoint, create_workflow, executions, send
from triggers import registry, webhook
from triggers.base import InboxEvent

pytestmark = pytest.mark.usefixtures("pipeline")

POISON = b'{"poison": true}'


def poison_trigger(monkeypatch: pytest.MonkeyPatch, poisoned: Callable[[dict[str, Any]], dict[str, Any]]) -> None:
    """Make webhook trigger data for POISON bodies whatever `poisoned` makes of it."""

    def trigger_data(event: InboxEvent) -> dict[str, Any]:
        data = webhook.TRIGGER.trigger_data(event)
        return poisoned(data) if event.body == POISON else data

    patched = dataclasses.replace(webhook.TRIGGER, trigger_data=trigger_data)
    monkeypatch.setitem(cast(dict[str, Any], registry.TRIGGERS), webhook.TRIGGER.name, patched)


def raising(data: dict[str, Any]) -> dict[str, Any]:
    raise RuntimeError("trigger data exploded")


def unstorable(data: dict[str, Any]) -> dict[str, Any]:
    return {**data, "huge": 2**70}  # no JSON encoder used for jsonb accepts it: the insert fails


async def listening(owner: Owner, receiver: Receiver) -> tuple[dict[str, Any], dict[str, Any], str]:
    target = f"/target/{uuid.uuid4().hex}"
    endpoint = await create_endpoint(owner.client)
    workflow = await create_workflow(owner.client, endpoint["id"], receiver.url + target)
    return endpoint, workflow, target


async def event(owner: Owner, event_id: str) -> dict[str, Any]:
    response = await owner.client.get(f"/api/events/{event_id}")
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()
    return result


async def rejected(owner: Owner, event_id: str) -> dict[str, Any] | None:
    found = await event(owner, event_id)
    return found if found["status"] == "rejected" else None


async def test_event_whose_trigger_data_raises_is_rejected_and_another_owner_runs(
    monkeypatch: pytest.MonkeyPatch,
    owner: Owner,
    other_owner: Owner,
    http: httpx.AsyncClient,
    receiver: Receiver,
    caplog: pytest.LogCaptureFixture,
) -> None:
    poison_trigger(monkeypatch, raising)
    bad_endpoint, bad_workflow, _ = await listening(owner, receiver)
    good_endpoint, good_workflow, good_target = await listening(other_owner, receiver)

    poison = (await send(http, bad_endpoint, POISON)).json()["event_id"]
    healthy = (await send(http, good_endpoint, b'{"ok": true}')).json()["event_id"]

    [ran] = await wait_for(lambda: executions(other_owner.client, good_workflow["id"], "succeeded"), timeout=10)
    assert ran["event_id"] == healthy
    assert len(receiver.to(good_target)) == 1
    shown = await wait_for(lambda: rejected(owner, poison), timeout=10)
    assert "planning" in shown["note"] and "RuntimeError" in shown["note"]
    assert "exploded" not in shown["note"]  # the kind of failure, never its message
    assert await executions(owner.client, bad_workflow["id"]) == []
    assert any(poison in r.getMessage() and "rejected" in r.getMessage() for r in caplog.records)


async def test_unstorable_event_in_a_batch_is_rejected_alone(
    monkeypatch: pytest.MonkeyPatch, owner: Owner, other_owner: Owner, receiver: Receiver, pool: Any
) -> None:
    poison_trigger(monkeypatch, unstorable)
    bad_endpoint, _, _ = await listening(owner, receiver)
    good_endpoint, good_workflow, _ = await listening(other_owner, receiver)

    # One statement, one commit: the dispatcher claims both events in the same batch.
    def new(o: Owner, endpoint: dict[str, Any], body: bytes) -> event_store.NewEvent:
        headers = {"content-type": "application/json"}
        return event_store.NewEvent(uuid.UUID(o.id), "webhook", endpoint["id"], uuid.uuid4().hex, headers, body)

    bad, good = new(owner, bad_endpoint, POISON), new(other_owner, good_endpoint, b'{"ok": 1}')
    async with pool.acquire() as conn:
        stored = await event_store.insert_events(conn, [bad, good])
    poison, healthy = str(stored[bad.key].event_id), str(stored[good.key].event_id)

    [ran] = await wait_for(lambda: executions(other_owner.client, good_workflow["id"], "succeeded"), timeout=10)
    assert ran["event_id"] == healthy
    shown = await wait_for(lambda: rejected(owner, poison), timeout=10)
    assert "storing its executions" in shown["note"]
    assert (await event(other_owner, healthy))["status"] == "dispatched"


async def test_rejected_events_can_be_listed_by_status(
    monkeypatch: pytest.MonkeyPatch, owner: Owner, http: httpx.AsyncClient, receiver: Receiver
) -> None:
    poison_trigger(monkeypatch, raising)
    endpoint, _, _ = await listening(owner, receiver)
    poison = (await send(http, endpoint, POISON)).json()["event_id"]
    await wait_for(lambda: rejected(owner, poison), timeout=10)

    response = await owner.client.get("/api/events", params={"status": "rejected"})

    assert response.status_code == 200, response.text
    assert [e["id"] for e in response.json()["items"]] == [poison]
