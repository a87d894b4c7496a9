"""Hostile `on_failure` values: another owner's workflow, the workflow itself, ids that name nothing.

Each is a 422 naming `on_failure` that changes nothing, and another owner's id reads exactly
like an unknown one, so the answer never tells whether it exists.
"""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from tests.conftest import Owner
from tests.integration.api_support import create_endpoint, create_workflow, create_workflow_from

pytestmark = pytest.mark.integration


def error_workflow_body(name: str = "on failure") -> dict[str, Any]:
    return {
        "name": name,
        "trigger": {"type": "workflow.failure", "config": {}},
        "action": {"type": "http.request", "config": {"url": "https://example.com/alert"}},
    }


async def error_workflow(owner: Owner) -> dict[str, Any]:
    return await create_workflow_from(owner, error_workflow_body())


async def webhook_workflow(owner: Owner, **extra: Any) -> dict[str, Any]:
    endpoint = await create_endpoint(owner)
    return await create_workflow(owner, endpoint["id"], **extra)


async def refused(owner: Owner, method: str, url: str, body: dict[str, Any]) -> dict[str, Any]:
    response = await owner.client.request(method, url, json=body)
    assert response.status_code == 422, response.text
    error: dict[str, Any] = response.json()["error"]
    assert error["field"] == "on_failure"
    return error


async def test_another_owners_workflow_is_refused_like_an_unknown_id(owner: Owner, other_owner: Owner) -> None:
    theirs = await error_workflow(other_owner)
    endpoint = await create_endpoint(owner)
    body = {
        "name": "w",
        "trigger": {"type": "webhook.received", "config": {"endpoint_id": endpoint["id"]}},
        "action": {"type": "http.request", "config": {"url": "https://example.com/x"}},
    }

    foreign = await refused(owner, "POST", "/api/workflows", body | {"on_failure": theirs["id"]})
    unknown = await refused(owner, "POST", "/api/workflows", body | {"on_failure": str(uuid.uuid4())})

    assert foreign == unknown
    assert (await owner.client.get("/api/workflows")).json()["items"] == []


async def test_a_patch_naming_another_owners_workflow_is_refused_and_changes_nothing(
    owner: Owner, other_owner: Owner
) -> None:
    theirs = await error_workflow(other_owner)
    mine = await webhook_workflow(owner)
    url = f"/api/workflows/{mine['id']}"

    foreign = await refused(owner, "PATCH", url, {"on_failure": theirs["id"], "name": "renamed"})
    unknown = await refused(owner, "PATCH", url, {"on_failure": str(uuid.uuid4())})

    assert foreign == unknown
    stored = (await owner.client.get(url)).json()
    assert stored["on_failure"] is None and stored["name"] == mine["name"]


async def test_a_workflow_cannot_name_itself(owner: Owner) -> None:
    mine = await error_workflow(owner)

    error = await refused(owner, "PATCH", f"/api/workflows/{mine['id']}", {"on_failure": mine["id"]})

    assert "own" in error["message"]
    assert (await owner.client.get(f"/api/workflows/{mine['id']}")).json()["on_failure"] is None


async def test_a_nonexistent_workflow_is_refused(owner: Owner) -> None:
    mine = await webhook_workflow(owner)

    error = await refused(owner, "PATCH", f"/api/workflows/{mine['id']}", {"on_failure": str(uuid.uuid4())})

    assert error["message"].endswith("no such workflow")


async def test_a_deleted_workflow_is_refused_like_an_unknown_id(owner: Owner) -> None:
    gone = await error_workflow(owner)
    await owner.client.delete(f"/api/workflows/{gone['id']}")
    mine = await webhook_workflow(owner)

    error = await refused(owner, "PATCH", f"/api/workflows/{mine['id']}", {"on_failure": gone["id"]})

    assert error["message"].endswith("no such workflow")


async def test_a_workflow_without_the_failure_trigger_is_refused(owner: Owner) -> None:
    plain = await webhook_workflow(owner)
    mine = await webhook_workflow(owner)

    error = await refused(owner, "PATCH", f"/api/workflows/{mine['id']}", {"on_failure": plain["id"]})

    assert "workflow.failure" in error["message"]


@pytest.mark.parametrize("value", ["not-a-uuid", 42, ["x"], {"id": "x"}, ""])
async def test_a_malformed_id_is_refused(owner: Owner, value: object) -> None:
    mine = await webhook_workflow(owner)

    response = await owner.client.patch(f"/api/workflows/{mine['id']}", json={"on_failure": value})

    assert response.status_code == 422, response.text
    assert response.json()["error"]["field"] == "on_failure"


async def test_a_subscriptions_internal_workflow_is_refused_like_an_unknown_id(owner: Owner, pool: Any) -> None:
    created = await owner.client.post(
        "/api/subscriptions", json={"target_url": "http://127.0.0.1:9/hooks", "event_types": ["execution.failed"]}
    )
    assert created.status_code == 201, created.text
    async with pool.acquire() as conn:
        internal = await conn.fetchval(
            "SELECT workflow_id FROM subscriptions WHERE id = $1", uuid.UUID(created.json()["id"])
        )
    mine = await webhook_workflow(owner)

    error = await refused(owner, "PATCH", f"/api/workflows/{mine['id']}", {"on_failure": str(internal)})

    assert error["message"].endswith("no such workflow")
