"""`POST /api/workflows/{id}/run`: run a workflow now, with trigger data of the trigger's shape
built from the request body (or, with `?shape=raw`, the body as the trigger data)."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest

from tests.conftest import Owner, Receiver, wait_for
from tests.factories import create_endpoint, create_workflow, executions, send

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("pipeline")]

NEVER = {"path": "body.kind", "op": "equals", "value": "impossible"}


async def workflow_to(owner: Owner, url: str, **extra: Any) -> dict[str, Any]:
    endpoint = await create_endpoint(owner.client)
    return await create_workflow(owner.client, endpoint["id"], url, **extra)


async def test_a_raw_manual_run_returns_an_execution_that_succeeds_with_the_body_as_trigger_data(
    owner: Owner, receiver: Receiver
) -> None:
    target = f"/run/{uuid.uuid4().hex}"
    workflow = await workflow_to(owner, receiver.url + target, action={"body": {"order": "{{ trigger.order.id }}"}})

    response = await owner.client.post(f"/api/workflows/{workflow['id']}/run?shape=raw", json={"order": {"id": 42}})

    assert response.status_code == 202, response.text
    assert response.json()["trigger_shape"] == "raw"
    execution_id = response.json()["execution_id"]
    [execution] = await wait_for(lambda: executions(owner.client, workflow["id"], "succeeded"))
    assert execution["id"] == execution_id
    assert execution["trigger_data"] == {"order": {"id": 42}}
    assert execution["event_id"] is None and execution["replay_of"] is None
    assert json.loads(receiver.to(target)[0].body) == {"order": 42}


async def test_a_manual_run_skips_the_trigger_filter(owner: Owner, receiver: Receiver) -> None:
    target = f"/run/{uuid.uuid4().hex}"
    workflow = await workflow_to(owner, receiver.url + target, filter=NEVER)

    response = await owner.client.post(f"/api/workflows/{workflow['id']}/run", json={"kind": "test"})

    assert response.status_code == 202
    await wait_for(lambda: executions(owner.client, workflow["id"], "succeeded"))
    assert len(receiver.to(target)) == 1


async def test_an_empty_body_runs_with_empty_trigger_data(owner: Owner, receiver: Receiver) -> None:
    workflow = await workflow_to(owner, receiver.url + f"/run/{uuid.uuid4().hex}")

    response = await owner.client.post(f"/api/workflows/{workflow['id']}/run?shape=raw")

    assert response.status_code == 202
    [execution] = await wait_for(lambda: executions(owner.client, workflow["id"], "succeeded"))
    assert execution["trigger_data"] == {}


async def test_a_schedule_workflow_can_be_run_by_hand(owner: Owner, receiver: Receiver) -> None:
    target = f"/run/{uuid.uuid4().hex}"
    body = {
        "name": "yearly",
        "trigger": {"type": "schedule.cron", "config": {"cron": "0 0 1 1 *"}},
        "action": {"type": "http.request", "config": {"url": receiver.url + target}},
    }
    workflow = (await owner.client.post("/api/workflows", json=body)).json()

    response = await owner.client.post(f"/api/workflows/{workflow['id']}/run", json={"payload": {"dry": True}})

    assert response.status_code == 202
    await wait_for(lambda: executions(owner.client, workflow["id"], "succeeded"))
    assert len(receiver.to(target)) == 1


async def test_running_another_owners_workflow_is_404(owner: Owner, other_owner: Owner) -> None:
    theirs = await workflow_to(other_owner, "http://127.0.0.1:9/x")

    response = await owner.client.post(f"/api/workflows/{theirs['id']}/run", json={})
    unknown = await owner.client.post(f"/api/workflows/{uuid.uuid4()}/run", json={})

    assert (response.status_code, unknown.status_code) == (404, 404)
    assert await executions(other_owner.client, theirs["id"]) == []


async def test_running_an_inactive_workflow_is_409_and_creates_nothing(owner: Owner) -> None:
    workflow = await workflow_to(owner, "http://127.0.0.1:9/x", active=False)

    response = await owner.client.post(f"/api/workflows/{workflow['id']}/run", json={})

    assert response.status_code == 409
    assert response.json()["error"]["code"] == "conflict"
    assert await executions(owner.client, workflow["id"]) == []


async def test_running_a_deleted_workflow_is_404(owner: Owner) -> None:
    workflow = await workflow_to(owner, "http://127.0.0.1:9/x")
    await owner.client.delete(f"/api/workflows/{workflow['id']}")

    response = await owner.client.post(f"/api/workflows/{workflow['id']}/run", json={})

    assert response.status_code == 404


async def test_trigger_data_must_be_a_json_object(owner: Owner) -> None:
    workflow = await workflow_to(owner, "http://127.0.0.1:9/x")
    url = f"/api/workflows/{workflow['id']}/run"

    not_json = await owner.client.post(url, content=b"{not json")
    a_list = await owner.client.post(url, json=[1, 2])

    assert (not_json.status_code, a_list.status_code) == (400, 422)
    assert await executions(owner.client, workflow["id"]) == []


# --- trigger shapes: a template written for real events renders the same on a manual run ---


async def test_a_webhook_template_renders_the_same_on_a_real_event_and_a_manual_run(
    owner: Owner, receiver: Receiver, http
) -> None:  # type: ignore[no-untyped-def]
    target = f"/run/{uuid.uuid4().hex}"
    endpoint = await create_endpoint(owner.client)
    workflow = await create_workflow(
        owner.client, endpoint["id"], receiver.url + target, action={"body": {"order": "{{ trigger.body.order.id }}"}}
    )
    delivered = await send(http, endpoint, b'{"order": {"id": "T-1"}}')
    assert delivered.status_code == 202, delivered.text
    await wait_for(lambda: _received(receiver, target, 1))

    response = await owner.client.post(f"/api/workflows/{workflow['id']}/run", json={"order": {"id": "T-1"}})

    assert response.status_code == 202 and response.json()["trigger_shape"] == "webhook.received"
    await wait_for(lambda: _received(receiver, target, 2))
    assert [json.loads(r.body) for r in receiver.to(target)] == [{"order": "T-1"}, {"order": "T-1"}]
    manual = [e for e in await executions(owner.client, workflow["id"]) if e["event_id"] is None]
    assert manual[0]["trigger_data"]["body"] == {"order": {"id": "T-1"}}
    assert manual[0]["trigger_data"]["headers"] == {} and manual[0]["trigger_data"]["endpoint_id"] == endpoint["id"]


async def test_a_schedule_manual_run_has_a_scheduled_time_and_the_body_as_payload(
    owner: Owner, receiver: Receiver
) -> None:
    target = f"/run/{uuid.uuid4().hex}"
    body = {
        "name": "yearly",
        "trigger": {"type": "schedule.cron", "config": {"cron": "0 0 1 1 *", "payload": {"report": "static"}}},
        "action": {
            "type": "http.request",
            "config": {
                "url": receiver.url + target,
                "body": {"report": "{{ trigger.payload.report }}", "at": "{{ trigger.scheduled_at }}"},
            },
        },
    }
    workflow = (await owner.client.post("/api/workflows", json=body)).json()

    given = await owner.client.post(f"/api/workflows/{workflow['id']}/run", json={"report": "by hand"})
    await wait_for(lambda: _received(receiver, target, 1))
    empty = await owner.client.post(f"/api/workflows/{workflow['id']}/run")
    await wait_for(lambda: _received(receiver, target, 2))

    assert given.json()["trigger_shape"] == empty.json()["trigger_shape"] == "schedule.cron"
    sent = sorted((json.loads(r.body) for r in receiver.to(target)), key=lambda b: b["report"])
    assert [b["report"] for b in sent] == ["by hand", "static"]
    assert all(b["at"] for b in sent)


async def test_a_gmail_manual_run_has_the_fields_of_a_message(owner: Owner, receiver: Receiver, pool, keyring) -> None:  # type: ignore[no-untyped-def]
    from tests.gmail_support import connect_google, unique_email

    target = f"/run/{uuid.uuid4().hex}"
    mailbox = await connect_google(pool, keyring, owner.id, unique_email(), "t", mailbox=False)
    body = {
        "name": "mail",
        "trigger": {"type": "gmail.receive-email", "config": {"mailbox": mailbox}},
        "action": {
            "type": "http.request",
            "config": {"url": receiver.url + target, "body": {"from": "{{ trigger.from }}", "cc": "{{ trigger.cc }}"}},
        },
    }
    created = await owner.client.post("/api/workflows", json=body)
    assert created.status_code == 201, created.text
    workflow = created.json()

    response = await owner.client.post(f"/api/workflows/{workflow['id']}/run", json={"from": "Erin <e@example.test>"})

    assert response.status_code == 202 and response.json()["trigger_shape"] == "gmail.receive-email"
    await wait_for(lambda: _received(receiver, target, 1))
    # `cc` was not given: it renders empty, as on a real message without one (not "path not found").
    assert json.loads(receiver.to(target)[0].body) == {"from": "Erin <e@example.test>", "cc": ""}
    [execution] = await executions(owner.client, workflow["id"])
    assert execution["trigger_data"]["mailbox"] == mailbox and execution["trigger_data"]["labels"] == []


async def test_a_tick_template_renders_the_same_on_a_real_tick_and_a_manual_run(
    owner: Owner, receiver: Receiver, http
) -> None:  # type: ignore[no-untyped-def]
    from tests.factories import signed

    target = f"/run/{uuid.uuid4().hex}"
    endpoint = await create_endpoint(owner.client)
    body = {
        "name": "nightly",
        "trigger": {"type": "schedule.tick", "config": {"auth": "hmac", "endpoint_id": endpoint["id"]}},
        "action": {
            "type": "http.request",
            "config": {"url": receiver.url + target, "body": {"job": "{{ trigger.body.job }}"}},
        },
    }
    created = await owner.client.post("/api/workflows", json=body)
    assert created.status_code == 201, created.text
    workflow = created.json()
    tick = b'{"job": "nightly", "scheduled_time": "2026-01-31T02:00:00Z"}'
    real = await http.post(
        f"/ingest/ticks/{workflow['id']}", content=tick, headers=signed("standard-webhooks", endpoint["secret"], tick)
    )
    assert real.status_code == 202, real.text
    await wait_for(lambda: _received(receiver, target, 1))

    response = await owner.client.post(f"/api/workflows/{workflow['id']}/run", json={"job": "nightly"})

    assert response.status_code == 202 and response.json()["trigger_shape"] == "schedule.tick"
    await wait_for(lambda: _received(receiver, target, 2))
    assert [json.loads(r.body) for r in receiver.to(target)] == [{"job": "nightly"}, {"job": "nightly"}]


async def _received(receiver: Receiver, target: str, n: int) -> bool:
    return len(receiver.to(target)) >= n
