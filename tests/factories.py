"""Builders for test data, through the public API as a user would."""

from __future__ import annotations

import time
import uuid
from typing import Any

import httpx

from ingest.signatures import SCHEMES


async def create_endpoint(client: httpx.AsyncClient, scheme: str = "standard-webhooks", **body: Any) -> dict[str, Any]:
    r = await client.post("/api/endpoints", json={"name": "test", "scheme": scheme, **body})
    assert r.status_code == 201, r.text
    data: dict[str, Any] = r.json()
    return data


async def create_workflow(
    client: httpx.AsyncClient,
    endpoint_id: str,
    url: str,
    *,
    filter: dict[str, Any] | None = None,
    action: dict[str, Any] | None = None,
    **extra: Any,
) -> dict[str, Any]:
    trigger_config: dict[str, Any] = {"endpoint_id": endpoint_id}
    if filter is not None:
        trigger_config["filter"] = filter
    body = {
        "name": "forward",
        "trigger": {"type": "webhook.received", "config": trigger_config},
        "action": {"type": "http.request", "config": {"url": url, **(action or {})}},
        **extra,
    }
    r = await client.post("/api/workflows", json=body)
    assert r.status_code == 201, r.text
    data: dict[str, Any] = r.json()
    return data


def signed(
    scheme: str, secret: str, body: bytes, msg_id: str | None = None, now: float | None = None
) -> dict[str, str]:
    headers = SCHEMES[scheme].sign(
        body, secret, now=time.time() if now is None else now, msg_id=msg_id or str(uuid.uuid4())
    )
    headers["content-type"] = "application/json"
    return headers


async def send(
    http: httpx.AsyncClient, endpoint: dict[str, Any], body: bytes, msg_id: str | None = None
) -> httpx.Response:
    headers = signed(endpoint["scheme"], endpoint["secret"], body, msg_id)
    return await http.post(f"/hooks/{endpoint['id']}", content=body, headers=headers)


async def executions(client: httpx.AsyncClient, workflow_id: str, status: str | None = None) -> list[dict[str, Any]]:
    params = {"status": status} if status else {}
    r = await client.get(f"/api/workflows/{workflow_id}/executions", params=params)
    assert r.status_code == 200, r.text
    items: list[dict[str, Any]] = r.json()["items"]
    return items
