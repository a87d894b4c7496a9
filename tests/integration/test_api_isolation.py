"""One owner can neither see nor touch another's objects: every such request is a plain 404."""

from __future__ import annotations

from dataclasses import dataclass

import asyncpg
import httpx
import pytest

from tests.conftest import Owner
from tests.integration.api_support import create_endpoint, create_workflow, queued_execution, stored_event

pytestmark = pytest.mark.integration


@dataclass
class Objects:
    endpoint: str
    workflow: str
    event: str
    execution: str


@pytest.fixture
async def owners_objects(owner: Owner, http: httpx.AsyncClient, pool: asyncpg.Pool) -> Objects:
    """One of everything, belonging to `owner`."""
    endpoint = (await create_endpoint(owner))["id"]
    workflow = (await create_workflow(owner, endpoint))["id"]
    event = await stored_event(http, endpoint)
    execution = await queued_execution(pool, owner, workflow, event)
    return Objects(endpoint, workflow, event, execution)


REQUESTS = [
    ("GET", "/api/endpoints/{endpoint}", None),
    ("DELETE", "/api/endpoints/{endpoint}", None),
    ("POST", "/api/endpoints/{endpoint}/rotate-secret", None),
    ("GET", "/api/workflows/{workflow}", None),
    ("PATCH", "/api/workflows/{workflow}", {"name": "stolen"}),
    ("DELETE", "/api/workflows/{workflow}", None),
    ("POST", "/api/workflows/{workflow}/activate", None),
    ("POST", "/api/workflows/{workflow}/deactivate", None),
    ("GET", "/api/workflows/{workflow}/executions", None),
    ("GET", "/api/executions/{execution}", None),
    ("POST", "/api/executions/{execution}/replay", None),
    ("GET", "/api/events/{event}", None),
]


@pytest.mark.parametrize(("method", "path", "body"), REQUESTS, ids=[f"{m} {p}" for m, p, _ in REQUESTS])
async def test_another_owners_object_is_404(
    owners_objects: Objects, other_owner: Owner, method: str, path: str, body: dict[str, str] | None
) -> None:
    url = path.format(**vars(owners_objects))

    response = await other_owner.client.request(method, url, json=body)

    assert response.status_code == 404
    assert set(response.json()) == {"error"}


async def test_another_owners_requests_change_nothing(
    owner: Owner, owners_objects: Objects, other_owner: Owner
) -> None:
    for method, path, body in REQUESTS:
        await other_owner.client.request(method, path.format(**vars(owners_objects)), json=body)

    workflow = (await owner.client.get(f"/api/workflows/{owners_objects.workflow}")).json()
    endpoint = (await owner.client.get(f"/api/endpoints/{owners_objects.endpoint}")).json()
    execution = (await owner.client.get(f"/api/executions/{owners_objects.execution}")).json()
    assert (workflow["name"], workflow["active"]) == ("notify", True)
    assert endpoint["active_secrets"] == 1
    assert execution["status"] == "queued"
    replays = (await owner.client.get(f"/api/events/{owners_objects.event}")).json()["executions"]
    assert len(replays) == 1


@pytest.mark.parametrize("collection", ["endpoints", "workflows", "events"])
async def test_lists_never_show_another_owners_items(
    owners_objects: Objects, other_owner: Owner, collection: str
) -> None:
    response = await other_owner.client.get(f"/api/{collection}")

    assert response.json() == {"items": [], "next_cursor": None}


async def test_event_filter_by_another_owners_endpoint_is_empty(owners_objects: Objects, other_owner: Owner) -> None:
    response = await other_owner.client.get("/api/events", params={"endpoint_id": owners_objects.endpoint})

    assert response.json()["items"] == []


async def test_workflow_cannot_listen_on_another_owners_endpoint(owners_objects: Objects, other_owner: Owner) -> None:
    body = {
        "name": "eavesdrop",
        "trigger": {"type": "webhook.received", "config": {"endpoint_id": owners_objects.endpoint}},
        "action": {"type": "http.request", "config": {"url": "https://example.com"}},
    }

    response = await other_owner.client.post("/api/workflows", json=body)

    assert response.status_code == 422
    assert response.json()["error"]["field"] == "trigger.config.endpoint_id"


async def test_another_owners_delete_keeps_the_endpoints_secrets(
    owner: Owner, owners_objects: Objects, other_owner: Owner
) -> None:
    await other_owner.client.delete(f"/api/endpoints/{owners_objects.endpoint}")

    endpoint = (await owner.client.get(f"/api/endpoints/{owners_objects.endpoint}")).json()

    assert endpoint["active_secrets"] == 1
