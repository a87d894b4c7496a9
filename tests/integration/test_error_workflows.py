"""Error workflows on the real stack: an execution that fails for good runs its workflow's
`on_failure` workflow exactly once, with the failed execution as trigger data; nothing else does.

The error workflow's execution is written in the transaction that records the failure, so the
moment an execution is seen terminal, whether an error workflow was queued for it is final.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

import httpx
import pytest

from tests.conftest import Owner, Receiver, Stack, new_owner, wait_for
from tests.factories import create_endpoint, create_workflow, executions, send
from tests.integration.test_resilience import isolated

pytestmark = pytest.mark.integration

FAST_RETRIES = {"max_attempts": 2, "initial_interval_s": 0.1, "max_interval_s": 1}
ALERT_BODY = {
    "failed": "{{ trigger.execution.id }}",
    "workflow": "{{ trigger.execution.workflow_name }}",
    "error": "{{ trigger.execution.error }}",
    "attempts": "{{ trigger.execution.attempts }}",
    "order": "{{ trigger.trigger.body.order }}",
}


def _path(kind: str) -> str:
    return f"/{kind}/{uuid.uuid4().hex}"


async def error_workflow(owner: Owner, url: str, **extra: Any) -> dict[str, Any]:
    body = {
        "name": "alert",
        "trigger": {"type": "workflow.failure", "config": {}},
        "action": {"type": "http.request", "config": {"url": url, "body": ALERT_BODY}},
        "retry_policy": {"max_attempts": 1},
        **extra,
    }
    response = await owner.client.post("/api/workflows", json=body)
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created


async def webhook_workflow(owner: Owner, url: str, on_failure: str, **extra: Any) -> tuple[dict[str, Any], Any]:
    endpoint = await create_endpoint(owner.client)
    fields = {"name": "orders", "on_failure": on_failure, "retry_policy": FAST_RETRIES, **extra}
    workflow = await create_workflow(owner.client, endpoint["id"], url, **fields)
    return endpoint, workflow


async def settled(owner: Owner, workflow_id: str, status: str) -> dict[str, Any]:
    [execution] = await wait_for(lambda: executions(owner.client, workflow_id, status), timeout=30)
    return execution


@pytest.mark.usefixtures("pipeline")
async def test_an_execution_that_fails_for_good_runs_the_error_workflow_once_with_it_as_trigger_data(
    owner: Owner, receiver: Receiver, http: httpx.AsyncClient
) -> None:
    target, alert_path = _path("orders"), _path("alert")
    receiver.script(target, 500, 500)
    alert = await error_workflow(owner, receiver.url + alert_path)
    endpoint, orders = await webhook_workflow(owner, receiver.url + target, alert["id"])

    assert (await send(http, endpoint, b'{"order": {"id": "A-1"}}')).status_code == 202

    failed = await settled(owner, orders["id"], "failed")
    run = await settled(owner, alert["id"], "succeeded")
    assert failed["attempts"] == 2 and len(receiver.to(target)) == 2
    assert run["trigger_data"]["execution"]["id"] == failed["id"]
    assert run["trigger_data"]["trigger"] == failed["trigger_data"]
    [request] = receiver.to(alert_path)
    assert json.loads(request.body) == {
        "failed": failed["id"],
        "workflow": "orders",
        "error": failed["error"],
        "attempts": 2,
        "order": {"id": "A-1"},
    }
    await asyncio.sleep(1)
    assert len(receiver.to(alert_path)) == 1
    assert len(await executions(owner.client, alert["id"])) == 1


@pytest.mark.usefixtures("pipeline")
async def test_a_retried_execution_that_succeeds_runs_no_error_workflow(
    owner: Owner, receiver: Receiver, http: httpx.AsyncClient
) -> None:
    target = _path("orders")
    receiver.script(target, 500)
    alert = await error_workflow(owner, receiver.url + _path("alert"))
    endpoint, orders = await webhook_workflow(owner, receiver.url + target, alert["id"])

    assert (await send(http, endpoint, b'{"order": {"id": "A-2"}}')).status_code == 202

    execution = await settled(owner, orders["id"], "succeeded")
    assert execution["attempts"] == 2
    assert await executions(owner.client, alert["id"]) == []


@pytest.mark.usefixtures("pipeline")
async def test_a_cancelled_execution_runs_no_error_workflow(
    owner: Owner, receiver: Receiver, http: httpx.AsyncClient
) -> None:
    target = _path("orders")
    receiver.script(target, 500)
    alert = await error_workflow(owner, receiver.url + _path("alert"))
    slow_retry = {"max_attempts": 3, "initial_interval_s": 600}
    endpoint, orders = await webhook_workflow(owner, receiver.url + target, alert["id"], retry_policy=slow_retry)
    assert (await send(http, endpoint, b'{"order": {"id": "A-3"}}')).status_code == 202

    waiting = await wait_for(lambda: _waiting_for_retry(owner, orders["id"]), timeout=30)
    response = await owner.client.post(f"/api/executions/{waiting['id']}/cancel")

    assert response.status_code in (200, 202), response.text
    await settled(owner, orders["id"], "cancelled")
    assert await executions(owner.client, alert["id"]) == []


async def _waiting_for_retry(owner: Owner, workflow_id: str) -> dict[str, Any] | None:
    running = await executions(owner.client, workflow_id, "running")
    return next((x for x in running if x["next_attempt_at"] is not None), None)


@pytest.mark.usefixtures("pipeline")
async def test_a_manual_run_that_fails_for_good_runs_the_error_workflow(owner: Owner, receiver: Receiver) -> None:
    target, alert_path = _path("orders"), _path("alert")
    receiver.script(target, 500, 500)
    alert = await error_workflow(owner, receiver.url + alert_path)
    _, orders = await webhook_workflow(owner, receiver.url + target, alert["id"])

    response = await owner.client.post(f"/api/workflows/{orders['id']}/run", json={"order": {"id": "M-1"}})

    assert response.status_code == 202, response.text
    failed = await settled(owner, orders["id"], "failed")
    run = await settled(owner, alert["id"], "succeeded")
    assert run["trigger_data"]["execution"]["id"] == failed["id"] == response.json()["execution_id"]
    assert json.loads(receiver.to(alert_path)[0].body)["order"] == {"id": "M-1"}


@pytest.mark.usefixtures("pipeline")
async def test_a_failing_error_workflow_starts_nothing_even_when_the_names_form_a_loop(
    owner: Owner, receiver: Receiver, http: httpx.AsyncClient
) -> None:
    # orders -> A, A -> B, B -> A: orders fails, A runs and fails; neither B nor A runs again.
    down = _path("down")
    receiver.script(down, 500, 500, 500, 500)
    a = await error_workflow(owner, receiver.url + down)
    b = await error_workflow(owner, receiver.url + down, on_failure=a["id"])
    patched = await owner.client.patch(f"/api/workflows/{a['id']}", json={"on_failure": b["id"]})
    assert patched.status_code == 200, patched.text
    endpoint, orders = await webhook_workflow(owner, receiver.url + down, a["id"], retry_policy={"max_attempts": 1})

    assert (await send(http, endpoint, b'{"order": {"id": "L-1"}}')).status_code == 202

    await settled(owner, orders["id"], "failed")
    await settled(owner, a["id"], "failed")
    assert await executions(owner.client, b["id"]) == []
    await asyncio.sleep(1)
    assert len(await executions(owner.client, a["id"])) == 1
    assert len(receiver.to(down)) == 2


async def test_a_worker_killed_during_the_failing_attempt_runs_the_error_workflow_once(
    stack: Stack, receiver: Receiver
) -> None:
    target, alert_path = _path("crash"), _path("alert")
    async with isolated(stack, worker_in_process=False) as (iso, base_url, pool):
        owner = await new_owner(pool, base_url)
        alert = await error_workflow(owner, receiver.url + alert_path)
        endpoint = await create_endpoint(owner.client)
        orders = await create_workflow(
            owner.client,
            endpoint["id"],
            receiver.url + target,
            on_failure=alert["id"],
            retry_policy={"max_attempts": 1},
        )
        receiver.script(target, 500, 500)
        receiver.delay_s = 2.0
        try:
            async with httpx.AsyncClient(base_url=base_url) as client:
                assert (await send(client, endpoint, b'{"order": {"id": "K-1"}}')).status_code == 202
            await wait_for(lambda: _sent(receiver, target), timeout=30)
            iso.kill_worker()
            receiver.delay_s = 0.0
            iso.spawn_worker()
            failed = await settled(owner, orders["id"], "failed")
            run = await wait_for(lambda: executions(owner.client, alert["id"], "succeeded"), timeout=60)
        finally:
            receiver.delay_s = 0.0
        assert [r["trigger_data"]["execution"]["id"] for r in run] == [failed["id"]]
        await asyncio.sleep(1)
        assert len(await executions(owner.client, alert["id"])) == 1
        assert len(receiver.to(alert_path)) == 1
        await owner.client.aclose()


async def _sent(receiver: Receiver, target: str) -> int:
    return len(receiver.to(target))
