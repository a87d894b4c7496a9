"""`/api/endpoints`: creating, reading, deleting endpoints and rotating their secrets."""

from __future__ import annotations

import base64

import httpx
import pytest

from settings import Settings
from tests.conftest import Owner, b64secret
from tests.integration.api_support import SECRET, create_endpoint, deliver

pytestmark = pytest.mark.integration


async def test_create_returns_the_endpoint_and_its_secret(owner: Owner, settings: Settings) -> None:
    response = await owner.client.post("/api/endpoints", json={"name": "github", "secret": SECRET})

    assert response.status_code == 201
    endpoint = response.json()
    assert endpoint["name"] == "github"
    assert endpoint["scheme"] == "standard-webhooks"
    assert endpoint["secret"] == SECRET
    assert endpoint["ingest_url"] == f"{settings.base_url}/hooks/{endpoint['id']}"


async def test_create_without_a_secret_generates_one(owner: Owner) -> None:
    response = await owner.client.post("/api/endpoints", json={})

    assert response.status_code == 201
    endpoint = response.json()
    assert endpoint["name"] == "endpoint"
    assert endpoint["secret"].startswith("whsec_")
    assert len(base64.b64decode(endpoint["secret"].removeprefix("whsec_"))) == 32


async def test_the_secret_is_never_shown_again(owner: Owner) -> None:
    endpoint = await create_endpoint(owner)

    fetched = (await owner.client.get(f"/api/endpoints/{endpoint['id']}")).json()
    listed = (await owner.client.get("/api/endpoints")).json()["items"]

    assert "secret" not in fetched
    assert all("secret" not in item for item in listed)
    assert SECRET not in str(fetched) + str(listed)


async def test_get_shows_the_count_of_valid_secrets(owner: Owner) -> None:
    endpoint = await create_endpoint(owner)

    response = await owner.client.get(f"/api/endpoints/{endpoint['id']}")

    assert response.status_code == 200
    assert response.json()["active_secrets"] == 1


@pytest.mark.parametrize(
    "secret",
    [
        "not-prefixed",
        "whsec_***not base64***",
        b64secret(b"x" * 23),
        b64secret(b"x" * 65),
    ],
    ids=["no-prefix", "not-base64", "too-short", "too-long"],
)
async def test_standard_webhooks_secret_must_be_whsec_base64_of_24_to_64_bytes(owner: Owner, secret: str) -> None:
    response = await owner.client.post("/api/endpoints", json={"secret": secret})

    assert response.status_code == 422
    error = response.json()["error"]
    assert error["field"] == "secret"
    assert secret not in error["message"]


async def test_other_schemes_accept_a_pasted_secret_of_8_to_256_characters(owner: Owner) -> None:
    ok = await owner.client.post("/api/endpoints", json={"scheme": "stripe", "secret": "whsec_stripe1"})
    short = await owner.client.post("/api/endpoints", json={"scheme": "github", "secret": "1234567"})
    long = await owner.client.post("/api/endpoints", json={"scheme": "slack", "secret": "s" * 257})

    assert ok.status_code == 201
    assert ok.json()["scheme"] == "stripe"
    assert (short.status_code, short.json()["error"]["field"]) == (422, "secret")
    assert (long.status_code, long.json()["error"]["field"]) == (422, "secret")


async def test_unknown_scheme_is_rejected_naming_the_field(owner: Owner) -> None:
    response = await owner.client.post("/api/endpoints", json={"scheme": "carrier-pigeon"})

    assert response.status_code == 422
    assert response.json()["error"]["field"] == "scheme"


async def test_list_pages_newest_first_with_a_cursor(owner: Owner) -> None:
    created = [(await create_endpoint(owner, name=f"e{i}"))["id"] for i in range(3)]

    first = (await owner.client.get("/api/endpoints", params={"limit": 2})).json()
    second = (await owner.client.get("/api/endpoints", params={"limit": 2, "cursor": first["next_cursor"]})).json()

    assert [e["id"] for e in first["items"]] == created[::-1][:2]
    assert [e["id"] for e in second["items"]] == created[:1]
    assert second["next_cursor"] is None


async def test_delete_removes_the_endpoint_and_refuses_its_deliveries(owner: Owner, http: httpx.AsyncClient) -> None:
    endpoint = await create_endpoint(owner)

    deleted = await owner.client.delete(f"/api/endpoints/{endpoint['id']}")

    assert deleted.status_code == 204
    assert (await owner.client.get(f"/api/endpoints/{endpoint['id']}")).status_code == 404
    assert (await owner.client.delete(f"/api/endpoints/{endpoint['id']}")).status_code == 404
    assert (await deliver(http, endpoint["id"], b"{}")).status_code == 404


async def test_rotation_returns_a_new_secret_and_the_grace_deadline(owner: Owner, settings: Settings) -> None:
    endpoint = await create_endpoint(owner)

    response = await owner.client.post(f"/api/endpoints/{endpoint['id']}/rotate-secret")

    assert response.status_code == 200
    rotated = response.json()
    assert rotated["secret"].startswith("whsec_") and rotated["secret"] != SECRET
    assert rotated["previous_valid_until"]
    fetched = (await owner.client.get(f"/api/endpoints/{endpoint['id']}")).json()
    assert fetched["active_secrets"] == 2


async def test_after_rotation_both_the_new_and_the_previous_secret_verify(
    owner: Owner, http: httpx.AsyncClient
) -> None:
    endpoint = await create_endpoint(owner)
    new_secret = b64secret(b"n" * 32)
    await owner.client.post(f"/api/endpoints/{endpoint['id']}/rotate-secret", json={"secret": new_secret})

    with_new = await deliver(http, endpoint["id"], b'{"v": "new"}', secret=new_secret)
    with_old = await deliver(http, endpoint["id"], b'{"v": "old"}', secret=SECRET)

    assert with_new.status_code == 202
    assert with_old.status_code == 202
    event = (await owner.client.get(f"/api/events/{with_old.json()['event_id']}")).json()
    assert event["verification"]["secret"] == "previous"


async def test_rotation_checks_a_supplied_secret_against_the_scheme(owner: Owner) -> None:
    endpoint = await create_endpoint(owner)

    response = await owner.client.post(
        f"/api/endpoints/{endpoint['id']}/rotate-secret", json={"secret": "plain-text-secret"}
    )

    assert response.status_code == 422
    assert response.json()["error"]["field"] == "secret"


async def test_unknown_or_malformed_endpoint_id_is_404(owner: Owner) -> None:
    unknown = await owner.client.get("/api/endpoints/7d1b3a52-3c0e-4b8e-9d55-0c9a4b0f4a11")
    malformed = await owner.client.get("/api/endpoints/not-a-uuid")

    assert unknown.status_code == 404
    assert malformed.status_code == 404
    assert malformed.json()["error"]["code"] == "not_found"
