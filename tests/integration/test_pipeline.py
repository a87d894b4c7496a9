"""The core promise, end to end: a verified webhook runs each matching workflow's action once."""

from __future__ import annotations

import asyncio
import time
import uuid

import pytest

from tests.conftest import Owner, Receiver, wait_for
from tests.factories import create_endpoint, create_workflow, executions, send, signed

pytestmark = pytest.mark.usefixtures("pipeline")

FAST_RETRY = {"max_attempts": 3, "initial_interval_s": 0.2, "backoff": 1.0, "max_interval_s": 1}


def path() -> str:
    return f"/target/{uuid.uuid4().hex}"


async def test_signed_webhook_runs_the_action_and_the_execution_succeeds(owner: Owner, http, receiver: Receiver):
    target = path()
    endpoint = await create_endpoint(owner.client)
    workflow = await create_workflow(
        owner.client, endpoint["id"], receiver.url + target, action={"body": {"order": "{{ trigger.body.order.id }}"}}
    )
    response = await send(http, endpoint, b'{"order": {"id": 7}}')
    assert response.status_code == 202
    [execution] = await wait_for(lambda: executions(owner.client, workflow["id"], "succeeded"))
    assert receiver.to(target)[0].body == b'{"order":7}'
    assert execution["attempts"] == 1
    assert execution["result"]["status_code"] == 200
    assert execution["event_id"] == response.json()["event_id"]


async def test_outgoing_request_carries_the_execution_id_as_idempotency_key(owner: Owner, http, receiver: Receiver):
    target = path()
    endpoint = await create_endpoint(owner.client)
    workflow = await create_workflow(owner.client, endpoint["id"], receiver.url + target)
    await send(http, endpoint, b"{}")
    [execution] = await wait_for(lambda: executions(owner.client, workflow["id"], "succeeded"))
    assert receiver.to(target)[0].headers["idempotency-key"] == execution["id"]


async def test_duplicate_delivery_is_acknowledged_and_runs_once(owner: Owner, http, receiver: Receiver):
    target = path()
    endpoint = await create_endpoint(owner.client)
    workflow = await create_workflow(owner.client, endpoint["id"], receiver.url + target)
    first = await send(http, endpoint, b'{"n": 1}', msg_id="msg-dup-1")
    second = await send(http, endpoint, b'{"n": 1}', msg_id="msg-dup-1")
    assert (first.status_code, second.status_code) == (202, 200)
    assert second.json() == {"event_id": first.json()["event_id"], "duplicate": True}
    await wait_for(lambda: executions(owner.client, workflow["id"], "succeeded"))
    await asyncio.sleep(0.5)
    assert len(await executions(owner.client, workflow["id"])) == 1
    assert len(receiver.to(target)) == 1


async def test_filter_mismatch_records_unmatched_with_the_reason_and_runs_nothing(owner: Owner, http, receiver):
    target = path()
    endpoint = await create_endpoint(owner.client)
    only_opened = {"path": "body.action", "op": "equals", "value": "opened"}
    workflow = await create_workflow(owner.client, endpoint["id"], receiver.url + target, filter=only_opened)
    event_id = (await send(http, endpoint, b'{"action": "closed"}')).json()["event_id"]

    async def resolved():
        event = (await owner.client.get(f"/api/events/{event_id}")).json()
        return event if event["status"] != "received" else None

    event = await wait_for(resolved)
    assert event["status"] == "unmatched"
    [candidate] = event["resolution"]
    assert candidate["workflow_id"] == workflow["id"]
    assert candidate["matched"] is False
    assert "closed" in candidate["reason"]
    assert candidate["execution_id"] is None
    assert await executions(owner.client, workflow["id"]) == []
    assert receiver.to(target) == []


async def test_one_event_runs_every_matching_workflow_once(owner: Owner, http, receiver: Receiver):
    targets = [path(), path()]
    endpoint = await create_endpoint(owner.client)
    workflows = [await create_workflow(owner.client, endpoint["id"], receiver.url + t) for t in targets]
    await send(http, endpoint, b"{}")
    for workflow in workflows:
        await wait_for(lambda w=workflow: executions(owner.client, w["id"], "succeeded"))
    assert [len(receiver.to(t)) for t in targets] == [1, 1]


async def test_target_4xx_fails_the_execution_without_retrying(owner: Owner, http, receiver: Receiver):
    target = path()
    receiver.script(target, 404)
    endpoint = await create_endpoint(owner.client)
    workflow = await create_workflow(owner.client, endpoint["id"], receiver.url + target, retry_policy=FAST_RETRY)
    await send(http, endpoint, b"{}")
    [execution] = await wait_for(lambda: executions(owner.client, workflow["id"], "failed"))
    assert execution["attempts"] == 1
    assert "404" in execution["error"]
    await asyncio.sleep(0.5)
    assert len(receiver.to(target)) == 1


async def test_target_503_then_200_succeeds_on_the_second_attempt(owner: Owner, http, receiver: Receiver):
    target = path()
    receiver.script(target, 503)
    endpoint = await create_endpoint(owner.client)
    workflow = await create_workflow(owner.client, endpoint["id"], receiver.url + target, retry_policy=FAST_RETRY)
    await send(http, endpoint, b"{}")
    [execution] = await wait_for(lambda: executions(owner.client, workflow["id"], "succeeded"))
    assert execution["attempts"] == 2
    assert len(receiver.to(target)) == 2


async def test_retries_stop_after_max_attempts(owner: Owner, http, receiver: Receiver):
    target = path()
    receiver.script(target, 500, 500, 500, 500)
    endpoint = await create_endpoint(owner.client)
    workflow = await create_workflow(owner.client, endpoint["id"], receiver.url + target, retry_policy=FAST_RETRY)
    await send(http, endpoint, b"{}")
    [execution] = await wait_for(lambda: executions(owner.client, workflow["id"], "failed"))
    assert execution["attempts"] == 3
    assert execution["error"].startswith("gave up after 3 attempts")


async def test_missing_template_path_fails_clearly(owner: Owner, http, receiver: Receiver):
    endpoint = await create_endpoint(owner.client)
    workflow = await create_workflow(
        owner.client, endpoint["id"], receiver.url + path(), action={"body": {"id": "{{ trigger.body.order.id }}"}}
    )
    await send(http, endpoint, b'{"other": 1}')
    [execution] = await wait_for(lambda: executions(owner.client, workflow["id"], "failed"))
    assert "trigger.body.order.id" in execution["error"]
    assert execution["attempts"] == 1


async def test_replay_creates_a_new_execution_of_the_same_event(owner: Owner, http, receiver: Receiver):
    target = path()
    endpoint = await create_endpoint(owner.client)
    workflow = await create_workflow(owner.client, endpoint["id"], receiver.url + target)
    await send(http, endpoint, b'{"n": 1}')
    [original] = await wait_for(lambda: executions(owner.client, workflow["id"], "succeeded"))
    replay = await owner.client.post(f"/api/executions/{original['id']}/replay")
    assert replay.status_code == 202
    assert replay.json()["replay_of"] == original["id"]
    done = await wait_for(lambda: _has(executions(owner.client, workflow["id"], "succeeded"), 2))
    assert {x["event_id"] for x in done} == {original["event_id"]}
    assert len(receiver.to(target)) == 2


async def test_deactivating_cancels_executions_not_yet_started(owner: Owner, http, receiver: Receiver):
    target = path()
    endpoint = await create_endpoint(owner.client)
    workflow = await create_workflow(owner.client, endpoint["id"], receiver.url + target, concurrency_limit=1)
    receiver.delay_s = 1.0
    try:
        for n in range(4):
            await send(http, endpoint, f'{{"n": {n}}}'.encode())
        await wait_for(lambda: _count(receiver, target))
        response = await owner.client.post(f"/api/workflows/{workflow['id']}/deactivate")
        assert response.status_code == 200
        assert response.json()["cancelled_executions"] >= 1
        await asyncio.sleep(2.5)
    finally:
        receiver.delay_s = 0.0
    statuses = [x["status"] for x in await executions(owner.client, workflow["id"])]
    assert "cancelled" in statuses
    assert len(receiver.to(target)) == 4 - statuses.count("cancelled")


async def test_ingest_answers_before_the_action_runs(owner: Owner, http, receiver: Receiver):
    target = path()
    endpoint = await create_endpoint(owner.client)
    await create_workflow(owner.client, endpoint["id"], receiver.url + target)
    receiver.delay_s = 1.5
    try:
        started = time.monotonic()
        response = await send(http, endpoint, b"{}")
        elapsed = time.monotonic() - started
    finally:
        receiver.delay_s = 0.0
    assert response.status_code == 202
    assert elapsed < 1.5


@pytest.mark.parametrize("scheme", ["standard-webhooks", "github", "stripe", "slack", "shopify"])
async def test_each_scheme_accepts_a_signed_delivery_and_rejects_forgeries(owner: Owner, http, scheme: str):
    secret = {} if scheme == "standard-webhooks" else {"secret": f"provider-secret-{scheme}"}
    endpoint = await create_endpoint(owner.client, scheme, **secret)
    url = f"/hooks/{endpoint['id']}"
    body = f'{{"id": "evt_{uuid.uuid4().hex}", "event_id": "Ev{uuid.uuid4().hex}"}}'.encode()
    headers = signed(scheme, endpoint["secret"], body)
    assert (await http.post(url, content=body + b" ", headers=headers)).status_code == 401
    wrong = signed(scheme, "whsec_" + "A" * 44 if scheme == "standard-webhooks" else "wrong-secret", body)
    assert (await http.post(url, content=body, headers=wrong)).status_code == 401
    if scheme in {"standard-webhooks", "stripe", "slack"}:
        stale = signed(scheme, endpoint["secret"], body, now=time.time() - 600)
        assert (await http.post(url, content=body, headers=stale)).status_code == 401
    assert (await http.post(url, content=body, headers=headers)).status_code == 202
    listed = (await owner.client.get("/api/events", params={"endpoint_id": endpoint["id"]})).json()["items"]
    assert len(listed) == 1


async def _has(coro, n: int):  # type: ignore[no-untyped-def]
    items = await coro
    return items if len(items) >= n else None


async def _count(receiver: Receiver, target: str) -> int:
    return len(receiver.to(target))


async def test_nul_characters_in_a_body_neither_stall_dispatch_nor_fail_the_execution(
    owner: Owner, http, receiver: Receiver
):
    target = path()
    receiver.bodies[target] = b'{"reply": "nul\\u0000here"}\x00'
    endpoint = await create_endpoint(owner.client)
    workflow = await create_workflow(
        owner.client, endpoint["id"], receiver.url + target, action={"body": {"t": "{{ trigger.body.text }}"}}
    )
    assert (await send(http, endpoint, b'{"text": "a\\u0000b"}')).status_code == 202
    [execution] = await wait_for(lambda: executions(owner.client, workflow["id"], "succeeded"))
    assert execution["trigger_data"]["body"]["text"] == "a\ufffdb"
    assert execution["attempts"] == 1


async def test_workflow_naming_its_endpoint_in_upper_case_still_fires(owner: Owner, http, receiver: Receiver):
    target = path()
    endpoint = await create_endpoint(owner.client)
    workflow = await create_workflow(owner.client, endpoint["id"].upper(), receiver.url + target)
    await send(http, endpoint, b"{}")
    await wait_for(lambda: executions(owner.client, workflow["id"], "succeeded"))


async def test_stripe_event_id_with_nul_is_stored_and_deduplicated(owner: Owner, http):
    endpoint = await create_endpoint(owner.client, "stripe", secret="whsec_stripe_provided_secret")
    body = b'{"id": "evt_\\u0000x"}'
    first = await http.post(
        f"/hooks/{endpoint['id']}", content=body, headers=signed("stripe", endpoint["secret"], body)
    )
    again = await http.post(
        f"/hooks/{endpoint['id']}", content=body, headers=signed("stripe", endpoint["secret"], body)
    )
    assert (first.status_code, again.status_code) == (202, 200)


async def test_replaying_an_execution_of_an_inactive_workflow_is_refused(owner: Owner, http, receiver: Receiver):
    endpoint = await create_endpoint(owner.client)
    workflow = await create_workflow(owner.client, endpoint["id"], receiver.url + path())
    await send(http, endpoint, b"{}")
    [execution] = await wait_for(lambda: executions(owner.client, workflow["id"], "succeeded"))
    await owner.client.post(f"/api/workflows/{workflow['id']}/deactivate")
    response = await owner.client.post(f"/api/executions/{execution['id']}/replay")
    assert response.status_code == 409
    assert "inactive" in response.json()["error"]["message"]
    assert len(await executions(owner.client, workflow["id"])) == 1
