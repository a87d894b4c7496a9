"""Helpers for the API tests: create objects through the API and deliver signed webhooks."""

from __future__ import annotations

import uuid
from typing import Any
from uuid import UUID

import asyncpg
import httpx

from schemas.store.executions import insert_for_events
from tests import factories
from tests.conftest import Owner, b64secret

SECRET = b64secret()


async def create_endpoint(owner: Owner, **body: Any) -> dict[str, Any]:
    """An endpoint created through the API, with the standard test secret unless given."""
    return await factories.create_endpoint(owner.client, **{"secret": SECRET, **body})


def workflow_body(endpoint_id: str, **overrides: Any) -> dict[str, Any]:
    """A valid create body: the endpoint's webhooks call an HTTP URL."""
    body: dict[str, Any] = {
        "name": "notify",
        "trigger": {"type": "webhook.received", "config": {"endpoint_id": endpoint_id}},
        "action": {"type": "http.request", "config": {"url": "https://example.com/hook"}},
    }
    body.update(overrides)
    return body


async def create_workflow(owner: Owner, endpoint_id: str, **overrides: Any) -> dict[str, Any]:
    """A webhook workflow created through the API."""
    return await create_workflow_from(owner, workflow_body(endpoint_id, **overrides))


async def create_workflow_from(owner: Owner, body: dict[str, Any]) -> dict[str, Any]:
    """A workflow created through the API from a whole body."""
    response = await owner.client.post("/api/workflows", json=body)
    assert response.status_code == 201, response.text
    workflow: dict[str, Any] = response.json()
    return workflow


async def create_credential(owner: Owner, provider: str, secret: dict[str, str]) -> str:
    """An API-key credential created through the API; its id."""
    response = await owner.client.post(
        "/api/credentials", json={"provider": provider, "name": provider, "secret": secret}
    )
    assert response.status_code == 201, response.text
    created: str = response.json()["id"]
    return created


def signed_headers(body: bytes, secret: str = SECRET, msg_id: str | None = None) -> dict[str, str]:
    """The headers a correct standard-webhooks sender would send."""
    return factories.signed("standard-webhooks", secret, body, msg_id or f"msg_{uuid.uuid4().hex}")


async def deliver(
    http: httpx.AsyncClient, endpoint_id: str, body: bytes, *, secret: str = SECRET, msg_id: str | None = None
) -> httpx.Response:
    """POST a correctly signed webhook."""
    headers = signed_headers(body, secret, msg_id)
    return await http.post(f"/hooks/{endpoint_id}", content=body, headers=headers)


async def stored_event(http: httpx.AsyncClient, endpoint_id: str, body: bytes = b'{"n": 1}') -> str:
    """The id of a newly stored event."""
    response = await deliver(http, endpoint_id, body)
    assert response.status_code == 202, response.text
    event_id: str = response.json()["event_id"]
    return event_id


async def queued_execution(pool: asyncpg.Pool, owner: Owner, workflow_id: str, event_id: str) -> str:
    """An execution queued the way the dispatcher would, which these tests do not run."""
    async with pool.acquire() as conn:
        created = await insert_for_events(
            conn, [UUID(owner.id)], [UUID(workflow_id)], [UUID(event_id)], [{"event_id": event_id}]
        )
    return str(created[(UUID(workflow_id), UUID(event_id))])
