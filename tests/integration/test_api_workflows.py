"""`/api/workflows` and executions: definitions, activation, signing secrets, replays."""

from __future__ import annotations

from uuid import UUID

import asyncpg
import httpx
import pytest

from oauth.crypto import Keyring
from schemas.store.signing import load_signing_secret
from tests.conftest import Owner
from tests.integration.api_support import (
    create_endpoint,
    create_workflow,
    queued_execution,
    stored_event,
    workflow_body,
)

pytestmark = pytest.mark.integration

SIGNED_ACTION = {"type": "http.request", "config": {"url": "https://example.com/hook", "sign": True}}


async def test_create_fills_defaults_and_returns_the_workflow(owner: Owner) -> None:
    endpoint = await create_endpoint(owner)

    response = await owner.client.post("/api/workflows", json=workflow_body(endpoint["id"]))

    assert response.status_code == 201
    workflow = response.json()
    assert workflow["name"] == "notify"
    assert workflow["trigger"] == {"type": "webhook.received", "config": {"endpoint_id": endpoint["id"]}}
    assert workflow["action"]["credential_id"] is None
    assert workflow["active"] is True
    assert workflow["concurrency_limit"] == 10
    assert workflow["retry_policy"] == {"max_attempts": 5, "initial_interval_s": 1, "backoff": 2, "max_interval_s": 300}
    assert workflow["signing"] is False
    assert "signing_secret" not in workflow


async def test_partial_retry_policy_is_completed_with_defaults(owner: Owner) -> None:
    endpoint = await create_endpoint(owner)

    workflow = await create_workflow(owner, endpoint["id"], retry_policy={"max_attempts": 2})

    assert workflow["retry_policy"]["max_attempts"] == 2
    assert workflow["retry_policy"]["max_interval_s"] == 300


async def test_get_and_list_show_the_workflow(owner: Owner) -> None:
    endpoint = await create_endpoint(owner)
    workflow = await create_workflow(owner, endpoint["id"])

    fetched = await owner.client.get(f"/api/workflows/{workflow['id']}")
    listed = await owner.client.get("/api/workflows")

    assert fetched.json() == workflow
    assert listed.json() == {"items": [workflow], "next_cursor": None}


async def test_signing_action_gets_a_secret_shown_once_and_stored_encrypted(
    owner: Owner, pool: asyncpg.Pool, keyring: Keyring
) -> None:
    endpoint = await create_endpoint(owner)

    workflow = await create_workflow(owner, endpoint["id"], action=SIGNED_ACTION)

    assert workflow["signing"] is True
    assert workflow["signing_secret"].startswith("whsec_")
    fetched = (await owner.client.get(f"/api/workflows/{workflow['id']}")).json()
    assert fetched["signing"] is True and "signing_secret" not in fetched
    async with pool.acquire() as conn:
        stored = await load_signing_secret(conn, keyring, UUID(owner.id), UUID(workflow["id"]))
    assert stored == workflow["signing_secret"]


async def test_patch_that_first_enables_signing_returns_the_new_secret(owner: Owner) -> None:
    endpoint = await create_endpoint(owner)
    workflow = await create_workflow(owner, endpoint["id"])

    enabled = (await owner.client.patch(f"/api/workflows/{workflow['id']}", json={"action": SIGNED_ACTION})).json()
    again = (await owner.client.patch(f"/api/workflows/{workflow['id']}", json={"name": "renamed"})).json()

    assert enabled["signing"] is True and enabled["signing_secret"].startswith("whsec_")
    assert again["signing"] is True and "signing_secret" not in again


async def test_patch_merges_top_level_fields_and_keeps_the_rest(owner: Owner) -> None:
    endpoint = await create_endpoint(owner)
    workflow = await create_workflow(owner, endpoint["id"])

    response = await owner.client.patch(
        f"/api/workflows/{workflow['id']}", json={"name": "renamed", "concurrency_limit": 3}
    )

    assert response.status_code == 200
    patched = response.json()
    assert (patched["name"], patched["concurrency_limit"]) == ("renamed", 3)
    assert patched["trigger"] == workflow["trigger"]
    assert patched["action"] == workflow["action"]
    assert patched["updated_at"] > workflow["updated_at"]


async def test_patch_replaces_the_action_whole(owner: Owner) -> None:
    endpoint = await create_endpoint(owner)
    workflow = await create_workflow(
        owner,
        endpoint["id"],
        action={"type": "http.request", "config": {"url": "https://a.example", "method": "PUT"}},
    )

    patched = (
        await owner.client.patch(
            f"/api/workflows/{workflow['id']}",
            json={"action": {"type": "http.request", "config": {"url": "https://b.example"}}},
        )
    ).json()

    assert patched["action"]["config"] == {"url": "https://b.example"}


async def test_patch_validates_a_replaced_trigger(owner: Owner) -> None:
    endpoint = await create_endpoint(owner)
    workflow = await create_workflow(owner, endpoint["id"])

    response = await owner.client.patch(
        f"/api/workflows/{workflow['id']}",
        json={"trigger": {"type": "webhook.received", "config": {"endpoint_id": "nope"}}},
    )

    assert response.status_code == 422
    assert response.json()["error"]["field"] == "trigger.config.endpoint_id"


async def test_deactivate_cancels_queued_executions(owner: Owner, http: httpx.AsyncClient, pool: asyncpg.Pool) -> None:
    endpoint = await create_endpoint(owner)
    workflow = await create_workflow(owner, endpoint["id"])
    execution_id = await queued_execution(pool, owner, workflow["id"], await stored_event(http, endpoint["id"]))

    response = await owner.client.post(f"/api/workflows/{workflow['id']}/deactivate")

    assert response.status_code == 200
    assert response.json()["active"] is False
    assert response.json()["cancelled_executions"] == 1
    execution = (await owner.client.get(f"/api/executions/{execution_id}")).json()
    assert execution["status"] == "cancelled"


async def test_activate_turns_a_workflow_back_on(owner: Owner) -> None:
    endpoint = await create_endpoint(owner)
    workflow = await create_workflow(owner, endpoint["id"], active=False)

    response = await owner.client.post(f"/api/workflows/{workflow['id']}/activate")

    assert response.status_code == 200
    assert response.json()["active"] is True
    assert response.json()["cancelled_executions"] == 0


async def test_patching_active_false_cancels_like_deactivate(
    owner: Owner, http: httpx.AsyncClient, pool: asyncpg.Pool
) -> None:
    endpoint = await create_endpoint(owner)
    workflow = await create_workflow(owner, endpoint["id"])
    await queued_execution(pool, owner, workflow["id"], await stored_event(http, endpoint["id"]))

    patched = (await owner.client.patch(f"/api/workflows/{workflow['id']}", json={"active": False})).json()

    assert patched["active"] is False
    assert patched["cancelled_executions"] == 1


async def test_delete_hides_the_workflow_but_keeps_its_executions(
    owner: Owner, http: httpx.AsyncClient, pool: asyncpg.Pool
) -> None:
    endpoint = await create_endpoint(owner)
    workflow = await create_workflow(owner, endpoint["id"])
    execution_id = await queued_execution(pool, owner, workflow["id"], await stored_event(http, endpoint["id"]))

    deleted = await owner.client.delete(f"/api/workflows/{workflow['id']}")

    assert deleted.status_code == 204
    assert (await owner.client.get(f"/api/workflows/{workflow['id']}")).status_code == 404
    assert (await owner.client.delete(f"/api/workflows/{workflow['id']}")).status_code == 404
    history = (await owner.client.get(f"/api/workflows/{workflow['id']}/executions")).json()
    assert [x["id"] for x in history["items"]] == [execution_id]
    assert history["items"][0]["status"] == "cancelled"


async def test_executions_list_filters_by_status(owner: Owner, http: httpx.AsyncClient, pool: asyncpg.Pool) -> None:
    endpoint = await create_endpoint(owner)
    workflow = await create_workflow(owner, endpoint["id"])
    execution_id = await queued_execution(pool, owner, workflow["id"], await stored_event(http, endpoint["id"]))
    url = f"/api/workflows/{workflow['id']}/executions"

    queued = (await owner.client.get(url, params={"status": "queued"})).json()
    failed = (await owner.client.get(url, params={"status": "failed"})).json()
    bad = await owner.client.get(url, params={"status": "exploded"})

    assert [x["id"] for x in queued["items"]] == [execution_id]
    assert failed["items"] == []
    assert bad.status_code == 400


async def test_execution_shows_its_trigger_data_and_temporal_ids(
    owner: Owner, http: httpx.AsyncClient, pool: asyncpg.Pool
) -> None:
    endpoint = await create_endpoint(owner)
    workflow = await create_workflow(owner, endpoint["id"])
    event_id = await stored_event(http, endpoint["id"])
    execution_id = await queued_execution(pool, owner, workflow["id"], event_id)

    execution = (await owner.client.get(f"/api/executions/{execution_id}")).json()

    assert execution["workflow_id"] == workflow["id"]
    assert execution["event_id"] == event_id
    assert execution["trigger_data"] == {"event_id": event_id}
    assert (execution["status"], execution["attempts"], execution["replay_of"]) == ("queued", 0, None)
    assert execution["temporal"] == {"workflow_id": None, "run_id": None}


async def test_replay_queues_a_new_execution_pointing_at_the_original(
    owner: Owner, http: httpx.AsyncClient, pool: asyncpg.Pool
) -> None:
    endpoint = await create_endpoint(owner)
    workflow = await create_workflow(owner, endpoint["id"])
    event_id = await stored_event(http, endpoint["id"])
    execution_id = await queued_execution(pool, owner, workflow["id"], event_id)

    response = await owner.client.post(f"/api/executions/{execution_id}/replay")

    assert response.status_code == 202
    replay = response.json()
    assert replay["id"] != execution_id
    assert (replay["replay_of"], replay["event_id"], replay["status"]) == (execution_id, event_id, "queued")
    event = (await owner.client.get(f"/api/events/{event_id}")).json()
    assert [x["id"] for x in event["executions"]] == [execution_id, replay["id"]]


async def test_replay_of_an_unknown_execution_is_404(owner: Owner) -> None:
    response = await owner.client.post("/api/executions/7d1b3a52-3c0e-4b8e-9d55-0c9a4b0f4a11/replay")

    assert response.status_code == 404


async def test_write_only_config_fields_are_never_shown(owner: Owner) -> None:
    endpoint = await create_endpoint(owner)
    secret_url = "https://hooks.slack.com/services/T0001/B0001/SUPERSECRETTOKEN"
    body = {
        "name": "notify",
        "trigger": {"type": "webhook.received", "config": {"endpoint_id": endpoint["id"]}},
        "action": {"type": "slack.post-message", "config": {"webhook_url": secret_url, "text": "hi"}},
    }
    created = await owner.client.post("/api/workflows", json=body)
    assert created.status_code == 201, created.text
    shown = await owner.client.get(f"/api/workflows/{created.json()['id']}")
    listed = await owner.client.get("/api/workflows")
    assert shown.json()["action"]["config"]["webhook_url"] == "********"
    assert "SUPERSECRETTOKEN" not in created.text + shown.text + listed.text
