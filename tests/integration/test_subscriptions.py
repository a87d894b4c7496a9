"""Subscriptions: signed notifications of executions ending, delivered exactly once through the
execution lanes (against the real stack: PostgreSQL, Temporal, dispatcher and worker)."""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

import asyncpg
import pytest
from standardwebhooks import Webhook

from tests.conftest import Owner, Receiver, Recorded, wait_for
from tests.factories import create_endpoint, create_workflow, executions

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("pipeline")]

FAST_RETRIES = {"delays_s": [0.3, 0.6], "max_attempts": 60}


async def subscribe(owner: Owner, url: str, event_types: list[str] | None = None, **extra: Any) -> dict[str, Any]:
    body = {"target_url": url, "event_types": event_types or ["execution.failed"], **extra}
    response = await owner.client.post("/api/subscriptions", json=body)
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created


async def failing_workflow(owner: Owner, receiver: Receiver) -> dict[str, Any]:
    """A workflow whose executions fail for good at once (its target answers 400)."""
    target = f"/fails/{uuid.uuid4().hex}"
    receiver.script(target, *([400] * 50))
    endpoint = await create_endpoint(owner.client)
    return await create_workflow(owner.client, endpoint["id"], receiver.url + target)


async def run(owner: Owner, workflow: dict[str, Any], data: dict[str, Any] | None = None) -> str:
    response = await owner.client.post(f"/api/workflows/{workflow['id']}/run?shape=raw", json=data or {})
    assert response.status_code == 202, response.text
    execution_id: str = response.json()["execution_id"]
    return execution_id


def verified(secret: str, request: Recorded) -> dict[str, Any]:
    """The payload, verified with the official Standard Webhooks library."""
    payload: dict[str, Any] = Webhook(secret).verify(request.body, request.headers)
    return payload


async def use_fast_retries(pool: asyncpg.Pool, subscription_id: str) -> None:
    async with pool.acquire() as conn:
        await conn.execute(
            "UPDATE workflows SET retry_policy = $2 WHERE id = (SELECT workflow_id FROM subscriptions WHERE id = $1)",
            uuid.UUID(subscription_id),
            FAST_RETRIES,
        )


async def test_an_execution_that_fails_for_good_produces_exactly_one_signed_execution_failed(
    owner: Owner, receiver: Receiver
) -> None:
    hook = f"/hear/{uuid.uuid4().hex}"
    sub = await subscribe(owner, receiver.url + hook)
    workflow = await failing_workflow(owner, receiver)

    execution_id = await run(owner, workflow, {"order": 7})

    [request] = await wait_for(lambda: _async(receiver.to(hook)))
    payload = verified(sub["secret"], request)
    assert payload["type"] == "execution.failed" and payload["version"] == 1
    assert request.headers["webhook-id"] == payload["id"]
    execution = payload["data"]["execution"]
    assert execution["id"] == execution_id and execution["status"] == "failed" and execution["attempts"] == 1
    assert "400" in execution["error"]
    assert payload["data"]["workflow"]["id"] == workflow["id"]
    assert payload["data"]["links"]["execution"].endswith(f"/api/executions/{execution_id}")
    assert payload["data"]["links"]["execution"].startswith("http")
    await asyncio.sleep(1.0)
    assert len(receiver.to(hook)) == 1


async def test_the_delivery_log_shows_the_delivery_with_its_response(owner: Owner, receiver: Receiver) -> None:
    hook = f"/log/{uuid.uuid4().hex}"
    sub = await subscribe(owner, receiver.url + hook)
    await run(owner, await failing_workflow(owner, receiver))

    async def delivered() -> list[dict[str, Any]]:
        page = (await owner.client.get(f"/api/subscriptions/{sub['id']}/deliveries")).json()
        return [d for d in page["items"] if d["status"] == "succeeded"]

    [delivery] = await wait_for(delivered)
    assert delivery["attempts"] == 1 and delivery["response_status"] == 200
    assert delivery["notification"]["type"] == "execution.failed"
    assert delivery["notification"]["id"] == receiver.to(hook)[0].headers["webhook-id"]


async def test_succeeded_executions_are_not_sent_to_a_failures_subscription(owner: Owner, receiver: Receiver) -> None:
    hook = f"/only-failures/{uuid.uuid4().hex}"
    all_hook = f"/all/{uuid.uuid4().hex}"
    await subscribe(owner, receiver.url + hook)
    every = await subscribe(owner, receiver.url + all_hook, ["execution.succeeded", "execution.failed"])
    endpoint = await create_endpoint(owner.client)
    workflow = await create_workflow(owner.client, endpoint["id"], receiver.url + f"/ok/{uuid.uuid4().hex}")

    await run(owner, workflow)

    [request] = await wait_for(lambda: _async(receiver.to(all_hook)))
    assert verified(every["secret"], request)["type"] == "execution.succeeded"
    assert receiver.to(hook) == []


async def test_deliveries_never_notify_about_themselves(owner: Owner, receiver: Receiver) -> None:
    hook = f"/no-loop/{uuid.uuid4().hex}"
    await subscribe(owner, receiver.url + hook, ["execution.succeeded", "execution.failed", "execution.cancelled"])
    await run(owner, await failing_workflow(owner, receiver))

    await wait_for(lambda: _async(receiver.to(hook)))
    await asyncio.sleep(1.5)  # a notification about the delivery would have arrived by now
    assert [json.loads(r.body)["type"] for r in receiver.to(hook)] == ["execution.failed"]


async def test_a_receiver_down_for_a_while_then_back_gets_everything_once_in_order(
    owner: Owner, receiver: Receiver, pool: asyncpg.Pool
) -> None:
    hook = f"/down/{uuid.uuid4().hex}"
    receiver.script(hook, *([503] * 6))
    sub = await subscribe(owner, receiver.url + hook)
    await use_fast_retries(pool, sub["id"])
    workflow = await failing_workflow(owner, receiver)

    sent = []
    for n in range(4):
        sent.append(await run(owner, workflow, {"n": n}))
        await wait_for(lambda: _failed_count(owner, workflow, len(sent)))

    def received_ok() -> list[str]:
        ids = [r.headers["webhook-id"] for r in receiver.to(hook)]
        return ids[6:]  # the first six were answered 503

    await wait_for(lambda: _async(len(set(received_ok())) == 4), timeout=40)
    await asyncio.sleep(1.0)
    delivered = [verified(sub["secret"], r)["data"]["execution"]["id"] for r in receiver.to(hook)[6:]]
    assert delivered == sent  # each once, in the order the executions ended


async def test_a_410_gone_disables_the_subscription_and_says_why(owner: Owner, receiver: Receiver) -> None:
    hook = f"/gone/{uuid.uuid4().hex}"
    receiver.script(hook, 410)
    sub = await subscribe(owner, receiver.url + hook)
    workflow = await failing_workflow(owner, receiver)

    await run(owner, workflow)

    async def disabled() -> dict[str, Any] | None:
        view: dict[str, Any] = (await owner.client.get(f"/api/subscriptions/{sub['id']}")).json()
        return view if view["status"] == "disabled" else None

    view = await wait_for(disabled)
    assert view["active"] is False and "410" in view["status_reason"]
    await run(owner, workflow)
    await wait_for(lambda: _failed_count(owner, workflow, 2))
    await asyncio.sleep(1.0)
    assert len(receiver.to(hook)) == 1


async def test_a_failing_target_marks_the_subscription_failing_until_a_delivery_succeeds(
    owner: Owner, receiver: Receiver, pool: asyncpg.Pool
) -> None:
    hook = f"/flaky/{uuid.uuid4().hex}"
    receiver.script(hook, 500, 500)
    sub = await subscribe(owner, receiver.url + hook)
    async with pool.acquire() as conn:
        await conn.execute(
            "UPDATE workflows SET retry_policy = $2 WHERE id = (SELECT workflow_id FROM subscriptions WHERE id = $1)",
            uuid.UUID(sub["id"]),
            {"delays_s": [2.0], "max_attempts": 10},
        )
    await run(owner, await failing_workflow(owner, receiver))

    async def status(wanted: str) -> dict[str, Any] | None:
        view: dict[str, Any] = (await owner.client.get(f"/api/subscriptions/{sub['id']}")).json()
        return view if view["status"] == wanted else None

    failing = await wait_for(lambda: status("failing"))
    assert failing["failing_since"] is not None and "500" in failing["status_reason"]
    healthy = await wait_for(lambda: status("healthy"), timeout=30)
    assert healthy["failing_since"] is None


async def test_failing_longer_than_the_disable_period_disables_it(
    owner: Owner, receiver: Receiver, pool: asyncpg.Pool
) -> None:
    hook = f"/dead/{uuid.uuid4().hex}"
    receiver.script(hook, *([500] * 50))
    sub = await subscribe(owner, receiver.url + hook)
    await use_fast_retries(pool, sub["id"])
    async with pool.acquire() as conn:
        await conn.execute("UPDATE subscriptions SET disable_after_s = 1 WHERE id = $1", uuid.UUID(sub["id"]))

    await run(owner, await failing_workflow(owner, receiver))

    async def disabled() -> dict[str, Any] | None:
        view: dict[str, Any] = (await owner.client.get(f"/api/subscriptions/{sub['id']}")).json()
        return view if view["status"] == "disabled" else None

    view = await wait_for(disabled, timeout=30)
    assert "failed for longer than 1 s" in view["status_reason"] and view["active"] is False


async def test_another_owners_subscription_never_sees_these_events(
    owner: Owner, other_owner: Owner, receiver: Receiver
) -> None:
    mine, theirs = f"/mine/{uuid.uuid4().hex}", f"/theirs/{uuid.uuid4().hex}"
    await subscribe(owner, receiver.url + mine)
    await subscribe(other_owner, receiver.url + theirs, ["execution.failed", "execution.succeeded"])

    await run(owner, await failing_workflow(owner, receiver))

    await wait_for(lambda: _async(receiver.to(mine)))
    await asyncio.sleep(1.0)
    assert receiver.to(theirs) == []


async def test_filters_limit_notifications_to_the_named_workflows(owner: Owner, receiver: Receiver) -> None:
    hook = f"/filtered/{uuid.uuid4().hex}"
    watched, other = await failing_workflow(owner, receiver), await failing_workflow(owner, receiver)
    await subscribe(owner, receiver.url + hook, filters={"workflow_ids": [watched["id"]]})

    await run(owner, other)
    watched_run = await run(owner, watched)

    [request] = await wait_for(lambda: _async(receiver.to(hook)))
    await asyncio.sleep(1.0)
    assert len(receiver.to(hook)) == 1
    assert json.loads(request.body)["data"]["execution"]["id"] == watched_run


async def test_during_a_rotation_both_secrets_sign(owner: Owner, receiver: Receiver) -> None:
    hook = f"/rotated/{uuid.uuid4().hex}"
    sub = await subscribe(owner, receiver.url + hook)
    rotated = await owner.client.post(f"/api/subscriptions/{sub['id']}/rotate-secret")
    assert rotated.status_code == 200
    new_secret = rotated.json()["secret"]
    assert new_secret.startswith("whsec_") and new_secret != sub["secret"]

    await run(owner, await failing_workflow(owner, receiver))

    [request] = await wait_for(lambda: _async(receiver.to(hook)))
    assert verified(new_secret, request) == verified(sub["secret"], request)
    assert len(request.headers["webhook-signature"].split()) == 2


async def test_retrying_a_delivery_sends_the_same_notification_again(owner: Owner, receiver: Receiver) -> None:
    hook = f"/again/{uuid.uuid4().hex}"
    sub = await subscribe(owner, receiver.url + hook)
    await run(owner, await failing_workflow(owner, receiver))
    [first] = await wait_for(lambda: _async(receiver.to(hook)))

    async def finished() -> list[dict[str, Any]]:
        page = (await owner.client.get(f"/api/subscriptions/{sub['id']}/deliveries")).json()
        return [d for d in page["items"] if d["status"] == "succeeded"]

    [delivery] = await wait_for(finished)
    response = await owner.client.post(f"/api/subscriptions/{sub['id']}/deliveries/{delivery['id']}/retry")

    assert response.status_code == 202, response.text
    assert response.json()["replay_of"] == delivery["id"]
    [_, second] = await wait_for(lambda: _async(len(receiver.to(hook)) == 2 and receiver.to(hook)))
    assert second.headers["webhook-id"] == first.headers["webhook-id"]
    assert second.body == first.body


async def test_deactivating_a_workflow_notifies_its_cancelled_executions(
    owner: Owner, receiver: Receiver, pool: asyncpg.Pool
) -> None:
    hook = f"/cancelled/{uuid.uuid4().hex}"
    sub = await subscribe(owner, receiver.url + hook, ["execution.cancelled"])
    endpoint = await create_endpoint(owner.client)
    workflow = await create_workflow(owner.client, endpoint["id"], receiver.url + "/never")
    async with pool.acquire() as conn:  # queued, never handed over: the workflow is not active yet
        execution_id = await conn.fetchval(
            "INSERT INTO executions (owner_id, workflow_id, trigger_data, signalled_at) "
            "VALUES ($1, $2, '{}', now()) RETURNING id",
            uuid.UUID(owner.id),
            uuid.UUID(workflow["id"]),
        )

    response = await owner.client.post(f"/api/workflows/{workflow['id']}/deactivate")
    assert response.status_code == 200, response.text

    [request] = await wait_for(lambda: _async(receiver.to(hook)))
    payload = verified(sub["secret"], request)
    assert payload["type"] == "execution.cancelled"
    assert payload["data"]["execution"]["id"] == str(execution_id)


async def _failed_count(owner: Owner, workflow: dict[str, Any], n: int) -> bool:
    return len(await executions(owner.client, workflow["id"], "failed")) >= n


async def _async(value: Any) -> Any:
    return value


async def test_subscriptions_are_listed_newest_first_in_pages(owner: Owner, receiver: Receiver) -> None:
    made = [await subscribe(owner, receiver.url + f"/page/{n}") for n in range(3)]

    first = (await owner.client.get("/api/subscriptions?limit=2")).json()
    second = (await owner.client.get(f"/api/subscriptions?limit=2&cursor={first['next_cursor']}")).json()

    listed = [s["id"] for s in first["items"] + second["items"]]
    assert listed == [s["id"] for s in reversed(made)]
    assert second["next_cursor"] is None
    assert all("secret" not in s for s in first["items"] + second["items"])


async def test_a_patch_changes_only_what_it_names(owner: Owner, receiver: Receiver) -> None:
    sub = await subscribe(owner, receiver.url + "/before", filters={"action_types": ["http.request"]})

    response = await owner.client.patch(
        f"/api/subscriptions/{sub['id']}", json={"event_types": ["execution.failed", "execution.cancelled"]}
    )

    assert response.status_code == 200, response.text
    view = response.json()
    assert view["event_types"] == ["execution.failed", "execution.cancelled"]
    assert view["target_url"] == receiver.url + "/before"
    assert view["filters"] == {"workflow_ids": None, "action_types": ["http.request"]}


async def test_a_deactivated_subscription_gets_nothing_and_says_so(owner: Owner, receiver: Receiver) -> None:
    hook = f"/paused/{uuid.uuid4().hex}"
    sub = await subscribe(owner, receiver.url + hook)
    paused = (await owner.client.patch(f"/api/subscriptions/{sub['id']}", json={"active": False})).json()
    assert paused["status"] == "disabled" and paused["status_reason"] == "deactivated by its owner"
    workflow = await failing_workflow(owner, receiver)

    await run(owner, workflow)
    await wait_for(lambda: _failed_count(owner, workflow, 1))
    await asyncio.sleep(1.0)
    assert receiver.to(hook) == []
    resumed = (await owner.client.patch(f"/api/subscriptions/{sub['id']}", json={"active": True})).json()
    assert resumed["status"] == "healthy" and resumed["status_reason"] is None
    await run(owner, workflow)
    await wait_for(lambda: _async(receiver.to(hook)))


async def test_a_deleted_subscription_is_gone_and_gets_nothing(owner: Owner, receiver: Receiver) -> None:
    hook = f"/deleted/{uuid.uuid4().hex}"
    sub = await subscribe(owner, receiver.url + hook)

    assert (await owner.client.delete(f"/api/subscriptions/{sub['id']}")).status_code == 204

    assert (await owner.client.get(f"/api/subscriptions/{sub['id']}")).status_code == 404
    assert (await owner.client.delete(f"/api/subscriptions/{sub['id']}")).status_code == 404
    workflow = await failing_workflow(owner, receiver)
    await run(owner, workflow)
    await wait_for(lambda: _failed_count(owner, workflow, 1))
    await asyncio.sleep(1.0)
    assert receiver.to(hook) == []


async def test_retrying_an_unfinished_delivery_is_409(owner: Owner, receiver: Receiver, pool: asyncpg.Pool) -> None:
    hook = f"/unfinished/{uuid.uuid4().hex}"
    receiver.script(hook, *([503] * 50))
    sub = await subscribe(owner, receiver.url + hook)
    await run(owner, await failing_workflow(owner, receiver))

    async def waiting() -> list[dict[str, Any]]:
        page = (await owner.client.get(f"/api/subscriptions/{sub['id']}/deliveries")).json()
        return [d for d in page["items"] if d["status"] == "running" and d["next_attempt_at"]]

    [delivery] = await wait_for(waiting)
    assert delivery["response_status"] == 503 and "503" in delivery["error"]
    response = await owner.client.post(f"/api/subscriptions/{sub['id']}/deliveries/{delivery['id']}/retry")
    assert response.status_code == 409
    await owner.client.delete(f"/api/subscriptions/{sub['id']}")  # cancels the waiting delivery


async def test_emit_delivers_only_to_subscriptions_whose_filters_match(
    owner: Owner, receiver: Receiver, pool: asyncpg.Pool
) -> None:
    from schemas.store.notifications import emit

    http_hook, slack_hook = f"/e-http/{uuid.uuid4().hex}", f"/e-slack/{uuid.uuid4().hex}"
    await subscribe(owner, receiver.url + http_hook, filters={"action_types": ["http.request"]})
    slack = await subscribe(owner, receiver.url + slack_hook, filters={"action_types": ["slack.post-message"]})
    async with pool.acquire() as conn, conn.transaction():
        await emit(
            conn,
            owner_id=uuid.UUID(owner.id),
            event_type="execution.failed",
            data={"execution": {"id": "x"}},
            action_type="slack.post-message",
            subject_id="x",
        )

    [request] = await wait_for(lambda: _async(receiver.to(slack_hook)))
    assert verified(slack["secret"], request)["data"] == {"execution": {"id": "x"}}
    await asyncio.sleep(1.0)
    assert receiver.to(http_hook) == []


async def test_an_execution_claimed_after_its_workflow_was_deactivated_is_notified_as_cancelled(
    owner: Owner, receiver: Receiver, pool: asyncpg.Pool
) -> None:
    from schemas.store.executions import claim_for_run

    hook = f"/claimed/{uuid.uuid4().hex}"
    sub = await subscribe(owner, receiver.url + hook, ["execution.cancelled"])
    endpoint = await create_endpoint(owner.client)
    workflow = await create_workflow(owner.client, endpoint["id"], receiver.url + "/never")
    await owner.client.post(f"/api/workflows/{workflow['id']}/deactivate")
    async with pool.acquire() as conn:  # handed over before the deactivation, as it were
        execution_id = await conn.fetchval(
            "INSERT INTO executions (owner_id, workflow_id, trigger_data, signalled_at) "
            "VALUES ($1, $2, '{}', now()) RETURNING id",
            uuid.UUID(owner.id),
            uuid.UUID(workflow["id"]),
        )
        claimed = await claim_for_run(conn, [execution_id], "lane-test-0", "run-1")

    assert claimed == []
    [request] = await wait_for(lambda: _async(receiver.to(hook)))
    payload = verified(sub["secret"], request)
    assert payload["data"]["execution"]["id"] == str(execution_id)
    assert payload["data"]["execution"]["error"] == "workflow was deactivated before this execution ran"


async def test_emit_takes_any_ids_and_strings_with_nul_characters(
    owner: Owner, receiver: Receiver, pool: asyncpg.Pool
) -> None:
    from schemas.store.notifications import emit

    hook = f"/nul/{uuid.uuid4().hex}"
    sub = await subscribe(owner, receiver.url + hook)
    async with pool.acquire() as conn, conn.transaction():
        workflow_id = await conn.fetchval("SELECT gen_random_uuid()")  # asyncpg's own UUID type
        await emit(
            conn,
            owner_id=uuid.UUID(owner.id),
            event_type="execution.failed",
            data={"workflow": {"id": workflow_id}, "error": "bad\x00byte"},
        )

    [request] = await wait_for(lambda: _async(receiver.to(hook)))
    data = verified(sub["secret"], request)["data"]
    assert data["workflow"]["id"] == str(workflow_id) and "\x00" not in data["error"]


async def test_a_notification_that_cannot_be_written_does_not_undo_the_outcome(
    owner: Owner, receiver: Receiver, pool: asyncpg.Pool, monkeypatch: pytest.MonkeyPatch
) -> None:
    from schemas.store import notifications
    from schemas.store.executions import record_outcomes

    async def defect(*args: Any, **kwargs: Any) -> int:
        raise RuntimeError("a defect in the notification code")

    await subscribe(owner, receiver.url + f"/defect/{uuid.uuid4().hex}")
    endpoint = await create_endpoint(owner.client)
    workflow = await create_workflow(owner.client, endpoint["id"], receiver.url + "/never")
    async with pool.acquire() as conn:
        execution_id = await conn.fetchval(
            "INSERT INTO executions (owner_id, workflow_id, trigger_data, status, signalled_at) "
            "VALUES ($1, $2, '{}', 'running', now()) RETURNING id",
            uuid.UUID(owner.id),
            uuid.UUID(workflow["id"]),
        )
        monkeypatch.setattr(notifications, "emit_many", defect)
        await record_outcomes(conn, [{"id": execution_id, "status": "failed", "error": "boom"}])
        status = await conn.fetchval("SELECT status FROM executions WHERE id = $1", execution_id)
    assert status == "failed"
