"""Delivering webhooks to `/hooks/{id}` and inspecting the stored events through `/api/events`."""

from __future__ import annotations

import httpx
import orjson
import pytest

from ingest.api.events import STATUSES
from settings import Settings
from tests.conftest import Owner
from tests.integration.api_support import create_endpoint, deliver, signed_headers

pytestmark = pytest.mark.integration

BODY = orjson.dumps({"type": "order.paid", "amount": 1200})


async def test_signed_delivery_is_accepted_with_an_event_id(owner: Owner, http: httpx.AsyncClient) -> None:
    endpoint = await create_endpoint(owner)

    response = await deliver(http, endpoint["id"], BODY)

    assert response.status_code == 202
    assert response.json()["duplicate"] is False
    assert response.json()["event_id"]


async def test_event_shows_verification_dedup_and_body(owner: Owner, http: httpx.AsyncClient) -> None:
    endpoint = await create_endpoint(owner)
    event_id = (await deliver(http, endpoint["id"], BODY, msg_id="msg_1")).json()["event_id"]

    response = await owner.client.get(f"/api/events/{event_id}")

    assert response.status_code == 200
    event = response.json()
    assert event["verification"]["verified"] is True
    assert event["verification"]["scheme"] == "standard-webhooks"
    assert event["verification"]["secret"] == "current"
    assert event["verification"]["delivery_id"] == "msg_1"
    assert event["dedup"] == {"key": "id:msg_1", "duplicate_count": 0, "last_duplicate_at": None}
    assert (event["source_type"], event["source_id"]) == ("webhook", endpoint["id"])
    assert event["body"] == {"type": "order.paid", "amount": 1200}
    assert event["body_size"] == len(BODY)
    assert event["headers"]["content-type"] == "application/json"
    assert "webhook-signature" not in event["headers"]


async def test_second_identical_delivery_is_a_counted_duplicate(owner: Owner, http: httpx.AsyncClient) -> None:
    endpoint = await create_endpoint(owner)
    headers = signed_headers(BODY, msg_id="msg_dup")
    first = await http.post(f"/hooks/{endpoint['id']}", content=BODY, headers=headers)

    second = await http.post(f"/hooks/{endpoint['id']}", content=BODY, headers=headers)

    assert second.status_code == 200
    assert second.json() == {"event_id": first.json()["event_id"], "duplicate": True}
    event = (await owner.client.get(f"/api/events/{first.json()['event_id']}")).json()
    assert event["dedup"]["duplicate_count"] == 1
    assert event["dedup"]["last_duplicate_at"] is not None


async def test_tampered_delivery_is_rejected_and_nothing_is_stored(owner: Owner, http: httpx.AsyncClient) -> None:
    endpoint = await create_endpoint(owner)
    headers = signed_headers(BODY)

    response = await http.post(f"/hooks/{endpoint['id']}", content=BODY + b" ", headers=headers)

    assert response.status_code == 401
    events = (await owner.client.get("/api/events", params={"endpoint_id": endpoint["id"]})).json()
    assert events["items"] == []


async def test_delivery_to_an_unknown_endpoint_is_404(http: httpx.AsyncClient) -> None:
    response = await deliver(http, "7d1b3a52-3c0e-4b8e-9d55-0c9a4b0f4a11", BODY)

    assert response.status_code == 404


async def test_body_over_the_limit_is_413(owner: Owner, http: httpx.AsyncClient, settings: Settings) -> None:
    endpoint = await create_endpoint(owner)
    body = b"x" * (1024 * 1024 + 1)
    assert len(body) > settings.max_body_bytes

    response = await deliver(http, endpoint["id"], body)

    assert response.status_code == 413


async def test_events_page_with_a_cursor(owner: Owner, http: httpx.AsyncClient) -> None:
    endpoint = await create_endpoint(owner)
    ids = [(await deliver(http, endpoint["id"], orjson.dumps({"n": n}))).json()["event_id"] for n in range(3)]

    first = (await owner.client.get("/api/events", params={"limit": 2})).json()
    second = (await owner.client.get("/api/events", params={"limit": 2, "cursor": first["next_cursor"]})).json()

    assert [e["id"] for e in first["items"]] == [ids[2], ids[1]]
    assert first["next_cursor"] is not None
    assert [e["id"] for e in second["items"]] == [ids[0]]
    assert second["next_cursor"] is None


async def test_event_list_omits_the_body(owner: Owner, http: httpx.AsyncClient) -> None:
    endpoint = await create_endpoint(owner)
    await deliver(http, endpoint["id"], BODY)

    items = (await owner.client.get("/api/events")).json()["items"]

    assert len(items) == 1
    assert "body" not in items[0]
    assert items[0]["body_size"] == len(BODY)


async def test_event_list_filters_by_endpoint(owner: Owner, http: httpx.AsyncClient) -> None:
    one, two = await create_endpoint(owner), await create_endpoint(owner)
    await deliver(http, one["id"], BODY)
    from_two = (await deliver(http, two["id"], BODY)).json()["event_id"]

    listed = (await owner.client.get("/api/events", params={"endpoint_id": two["id"]})).json()

    assert [e["id"] for e in listed["items"]] == [from_two]


async def test_event_list_filters_by_status(owner: Owner, http: httpx.AsyncClient) -> None:
    endpoint = await create_endpoint(owner)
    delivered = {(await deliver(http, endpoint["id"], orjson.dumps({"n": n}))).json()["event_id"] for n in range(2)}

    pages = {s: (await owner.client.get("/api/events", params={"status": s})).json()["items"] for s in STATUSES}

    assert all(e["status"] == status for status, items in pages.items() for e in items)
    assert {e["id"] for items in pages.values() for e in items} == delivered


async def test_non_json_body_is_shown_as_text(owner: Owner, http: httpx.AsyncClient) -> None:
    endpoint = await create_endpoint(owner)
    event_id = (await deliver(http, endpoint["id"], b"a=1&b=2")).json()["event_id"]

    event = (await owner.client.get(f"/api/events/{event_id}")).json()

    assert event["body"] == "a=1&b=2"


@pytest.mark.parametrize(
    "params",
    [{"status": "lost"}, {"endpoint_id": "nope"}, {"limit": "0"}, {"limit": "201"}, {"limit": "x"}, {"cursor": "!!"}],
    ids=["status", "endpoint_id", "limit-zero", "limit-over", "limit-text", "cursor"],
)
async def test_bad_list_parameters_are_400_naming_the_parameter(owner: Owner, params: dict[str, str]) -> None:
    response = await owner.client.get("/api/events", params=params)

    assert response.status_code == 400
    assert response.json()["error"]["field"] == next(iter(params))
