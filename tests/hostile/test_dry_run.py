"""Hostile events and drafts cannot make a dry run crash, grow without bound or show secrets."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import orjson
import pytest

from ingest import dryrun
from tests.conftest import Owner
from tests.integration.api_support import create_endpoint, stored_event, workflow_body

pytestmark = pytest.mark.integration


def matching_all(endpoint_id: str, **action: Any) -> dict[str, Any]:
    condition = {"path": "body.x", "op": "exists"}
    trigger = {"type": "webhook.received", "config": {"endpoint_id": endpoint_id, "filter": condition}}
    return workflow_body(endpoint_id, trigger=trigger, **action)


async def test_a_body_nested_past_the_depth_limit_is_text_to_the_trigger(owner: Owner, http: httpx.AsyncClient) -> None:
    endpoint = await create_endpoint(owner)
    event_id = await stored_event(http, endpoint["id"], b'{"x": ' + b"[" * 5000 + b"]" * 5000 + b"}")

    response = await owner.client.post(
        "/api/workflows/dry-run", json={"workflow": matching_all(endpoint["id"]), "event_ids": [event_id]}
    )

    assert response.status_code == 200
    [result] = response.json()["results"]
    assert result["matched"] is False and result["trace"][-1]["missing"] is True


async def test_huge_values_are_shortened_in_the_trace(owner: Owner, http: httpx.AsyncClient) -> None:
    endpoint = await create_endpoint(owner)
    event_id = await stored_event(http, endpoint["id"], orjson.dumps({"x": "y" * 500_000}))

    response = await owner.client.post(
        "/api/workflows/dry-run", json={"workflow": matching_all(endpoint["id"]), "event_ids": [event_id]}
    )

    assert response.status_code == 200
    assert len(response.content) < 10_000
    assert len(response.json()["results"][0]["trace"][-1]["seen"]) <= 50


async def test_nul_characters_in_an_event_do_not_break_the_answer(owner: Owner, http: httpx.AsyncClient) -> None:
    endpoint = await create_endpoint(owner)
    event_id = await stored_event(http, endpoint["id"], b'{"x": "a\\u0000b"}')
    action = {"type": "http.request", "config": {"url": "https://example.com/", "body": "{{ trigger.body.x }}"}}

    response = await owner.client.post(
        "/api/workflows/dry-run",
        json={"workflow": matching_all(endpoint["id"], action=action), "event_ids": [event_id]},
    )

    assert response.status_code == 200
    assert response.json()["results"][0]["action"]["request"]["body"] == "a\ufffdb"


async def test_repeated_event_ids_are_looked_at_once(owner: Owner, http: httpx.AsyncClient) -> None:
    endpoint = await create_endpoint(owner)
    event_id = await stored_event(http, endpoint["id"], b'{"x": 1}')
    ids = [event_id] * dryrun.MAX_EVENTS

    response = await owner.client.post(
        "/api/workflows/dry-run", json={"workflow": matching_all(endpoint["id"]), "event_ids": ids}
    )

    assert response.status_code == 200 and len(response.json()["results"]) == 1


async def test_header_values_that_look_like_credentials_are_masked_whatever_their_case(
    owner: Owner, http: httpx.AsyncClient
) -> None:
    endpoint = await create_endpoint(owner)
    event_id = await stored_event(http, endpoint["id"], b'{"x": 1}')
    secret = f"s3cr3t-{uuid.uuid4().hex}"
    headers = {"Authorization": f"Bearer {secret}", "X-Shop-Token": secret, "Cookie": f"sid={secret}"}
    action = {"type": "http.request", "config": {"url": "https://example.com/", "headers": headers}}

    response = await owner.client.post(
        "/api/workflows/dry-run",
        json={"workflow": matching_all(endpoint["id"], action=action), "event_ids": [event_id]},
    )

    assert response.status_code == 200 and secret not in response.text
