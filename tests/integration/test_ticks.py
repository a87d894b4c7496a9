"""`POST /ingest/ticks/{trigger_id}`: ticks from outside schedulers, signed (HMAC) or with an OIDC token.

Google's signing keys are stood in by respx with keys generated here; everything else is real.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import orjson
import pytest
import respx

from hookyard import services
from ingest.oidc import GOOGLE_CERTS_URL
from oauth.crypto import Keyring
from settings import Settings
from tests.conftest import Owner, Receiver, serve, wait_for
from tests.factories import create_endpoint, executions, signed
from tests.google_oidc import GoogleSigner
from tests.integration.api_support import create_workflow_from as create

pytestmark = pytest.mark.integration

SCHEDULER = "scheduler@hookyard-test.iam.gserviceaccount.com"
SIGNER = GoogleSigner("tick-key-1")


def tick_body(config: dict[str, Any], url: str = "http://127.0.0.1:9/x", **extra: Any) -> dict[str, Any]:
    return {
        "name": "nightly",
        "trigger": {"type": "schedule.tick", "config": config},
        "action": {"type": "http.request", "config": {"url": url}},
        **extra,
    }


async def hmac_tick_workflow(owner: Owner, url: str = "http://127.0.0.1:9/x") -> tuple[dict[str, Any], dict[str, Any]]:
    endpoint = await create_endpoint(owner.client)
    workflow = await create(owner, tick_body({"auth": "hmac", "endpoint_id": endpoint["id"]}, url))
    return endpoint, workflow


async def send_tick(
    http: httpx.AsyncClient,
    workflow_id: str,
    secret: str,
    body: bytes = b"",
    *,
    scheduled: str | None = None,
    msg_id: str | None = None,
) -> httpx.Response:
    if scheduled is not None:  # HMAC ticks name their time in the signed body
        body = orjson.dumps({**(orjson.loads(body) if body else {}), "scheduled_time": scheduled})
    headers = signed("standard-webhooks", secret, body, msg_id)
    return await http.post(f"/ingest/ticks/{workflow_id}", content=body, headers=headers)


async def stored(owner: Owner, workflow_id: str) -> list[dict[str, Any]]:
    response = await owner.client.get("/api/events", params={"limit": 200})
    assert response.status_code == 200, response.text
    return [e for e in response.json()["items"] if e["source_id"] == workflow_id]


# --- HMAC ----------------------------------------------------------------------------------


@pytest.mark.usefixtures("pipeline")
async def test_a_signed_tick_is_stored_and_runs_the_action(owner: Owner, http, receiver: Receiver) -> None:
    target = f"/cron/{uuid.uuid4().hex}"
    endpoint, workflow = await hmac_tick_workflow(owner, receiver.url + target)

    response = await send_tick(
        http, workflow["id"], endpoint["secret"], b'{"job": "nightly"}', scheduled="2026-01-31T10:00:00+01:00"
    )

    assert response.status_code == 202, response.text
    [execution] = await wait_for(lambda: executions(owner.client, workflow["id"], "succeeded"))
    assert execution["event_id"] == response.json()["event_id"]
    assert execution["trigger_data"]["scheduled_at"] == "2026-01-31T09:00:00Z"
    assert execution["trigger_data"]["body"]["job"] == "nightly"
    assert len(receiver.to(target)) == 1
    [event] = await stored(owner, workflow["id"])
    assert event["source_type"] == "tick"
    assert event["dedup"]["key"] == "scheduled:2026-01-31T09:00:00Z"
    assert event["verification"]["auth"] == "hmac"


async def test_the_same_scheduled_time_twice_is_one_event(owner: Owner, http) -> None:
    endpoint, workflow = await hmac_tick_workflow(owner)

    # Two deliveries (distinct webhook ids) that name the same scheduled time.
    first = await send_tick(http, workflow["id"], endpoint["secret"], scheduled="2026-02-01T00:00:00Z")
    second = await send_tick(http, workflow["id"], endpoint["secret"], scheduled="1769904000")

    assert (first.status_code, second.status_code) == (202, 200)
    assert second.json() == {"event_id": first.json()["event_id"], "duplicate": True}
    assert len(await stored(owner, workflow["id"])) == 1


async def test_without_a_scheduled_time_a_redelivery_is_deduplicated_on_its_delivery_id(owner: Owner, http) -> None:
    endpoint, workflow = await hmac_tick_workflow(owner)

    first = await send_tick(http, workflow["id"], endpoint["secret"], msg_id="msg_tick_1")
    again = await send_tick(http, workflow["id"], endpoint["secret"], msg_id="msg_tick_1")
    other = await send_tick(http, workflow["id"], endpoint["secret"], msg_id="msg_tick_2")

    assert (first.status_code, again.status_code, other.status_code) == (202, 200, 202)
    assert len(await stored(owner, workflow["id"])) == 2


async def test_the_scheduled_time_may_be_given_in_the_body(owner: Owner, http) -> None:
    endpoint, workflow = await hmac_tick_workflow(owner)
    body = b'{"scheduled_time": "2026-03-01T06:00:00Z"}'

    first = await send_tick(http, workflow["id"], endpoint["secret"], body)
    again = await send_tick(http, workflow["id"], endpoint["secret"], body)

    assert (first.status_code, again.status_code) == (202, 200)
    [event] = await stored(owner, workflow["id"])
    assert event["dedup"]["key"] == "scheduled:2026-03-01T06:00:00Z"


async def test_a_bad_signature_is_401_and_nothing_is_stored(owner: Owner, http) -> None:
    _, workflow = await hmac_tick_workflow(owner)
    wrong = "whsec_" + "A" * 43 + "="

    response = await send_tick(http, workflow["id"], wrong, scheduled="2026-01-01T00:00:00Z")
    unsigned = await http.post(f"/ingest/ticks/{workflow['id']}", content=b"{}")

    assert response.status_code == 401
    assert response.json()["error"]["code"] == "signature_bad_signature"
    assert unsigned.status_code == 401
    assert unsigned.json()["error"]["code"] == "signature_missing_header"
    assert await stored(owner, workflow["id"]) == []


async def test_a_rotated_out_secret_still_works_during_the_grace_period(owner: Owner, http) -> None:
    endpoint, workflow = await hmac_tick_workflow(owner)
    rotated = await owner.client.post(f"/api/endpoints/{endpoint['id']}/rotate-secret")
    assert rotated.status_code == 200, rotated.text

    old = await send_tick(http, workflow["id"], endpoint["secret"], scheduled="2026-01-01T00:00:00Z")
    new = await send_tick(http, workflow["id"], rotated.json()["secret"], scheduled="2026-01-01T00:01:00Z")

    assert (old.status_code, new.status_code) == (202, 202)


async def test_a_deleted_endpoint_no_longer_verifies_ticks(owner: Owner, http) -> None:
    endpoint, workflow = await hmac_tick_workflow(owner)
    assert (await owner.client.delete(f"/api/endpoints/{endpoint['id']}")).status_code == 204

    response = await send_tick(http, workflow["id"], endpoint["secret"], scheduled="2026-01-01T00:00:00Z")

    assert response.status_code == 401
    assert await stored(owner, workflow["id"]) == []


async def test_unknown_triggers_are_404(owner: Owner, http) -> None:
    endpoint = await create_endpoint(owner.client)
    webhook = await create(
        owner,
        {
            "name": "not a tick",
            "trigger": {"type": "webhook.received", "config": {"endpoint_id": endpoint["id"]}},
            "action": {"type": "http.request", "config": {"url": "http://127.0.0.1:9/x"}},
        },
    )
    _, deleted = await hmac_tick_workflow(owner)
    await owner.client.delete(f"/api/workflows/{deleted['id']}")

    for trigger_id in (str(uuid.uuid4()), "not-a-uuid", webhook["id"], deleted["id"]):
        response = await send_tick(http, trigger_id, endpoint["secret"], scheduled="2026-01-01T00:00:00Z")
        assert response.status_code == 404, trigger_id
        assert response.json()["error"]["code"] == "not_found"


async def test_an_unreadable_scheduled_time_is_400_and_nothing_is_stored(owner: Owner, http) -> None:
    endpoint, workflow = await hmac_tick_workflow(owner)

    response = await send_tick(http, workflow["id"], endpoint["secret"], scheduled="tomorrow-ish")

    assert response.status_code == 400
    assert "scheduled_time" in response.json()["error"]["message"]
    assert await stored(owner, workflow["id"]) == []


async def test_an_unsigned_scheduled_time_header_cannot_turn_a_replay_into_a_new_tick(owner: Owner, http) -> None:
    endpoint, workflow = await hmac_tick_workflow(owner)
    headers = signed("standard-webhooks", endpoint["secret"], b"", "msg_replayed")
    path = f"/ingest/ticks/{workflow['id']}"

    first = await http.post(path, content=b"", headers={**headers, "x-scheduled-time": "2030-01-01T00:00:00Z"})
    replay = await http.post(path, content=b"", headers={**headers, "x-scheduled-time": "2030-01-01T00:01:00Z"})

    assert (first.status_code, replay.status_code) == (202, 200)
    assert len(await stored(owner, workflow["id"])) == 1


async def test_hmac_ticks_need_an_endpoint_of_the_owner(owner: Owner, other_owner: Owner) -> None:
    theirs = await create_endpoint(other_owner.client)
    missing = await owner.client.post("/api/workflows", json=tick_body({"auth": "hmac"}))
    foreign = await owner.client.post("/api/workflows", json=tick_body({"auth": "hmac", "endpoint_id": theirs["id"]}))
    mixed = await owner.client.post(
        "/api/workflows",
        json=tick_body({"auth": "oidc", "audience": "a", "service_account": SCHEDULER, "endpoint_id": theirs["id"]}),
    )

    assert (missing.status_code, missing.json()["error"]["field"]) == (422, "trigger.config.endpoint_id")
    assert (foreign.status_code, foreign.json()["error"]["field"]) == (422, "trigger.config.endpoint_id")
    assert (mixed.status_code, mixed.json()["error"]["field"]) == (422, "trigger.config.endpoint_id")


# --- OIDC ----------------------------------------------------------------------------------


@pytest.fixture
async def oidc_app(settings: Settings, keyring: Keyring) -> AsyncIterator[httpx.AsyncClient]:
    """A fresh app (so its key cache holds only these keys), with Google's certs stood in."""
    from ingest.app import create_app

    with respx.mock(assert_all_called=False) as mock:
        mock.route(host="127.0.0.1").pass_through()
        mock.get(GOOGLE_CERTS_URL).respond(200, json=SIGNER.jwks(), headers={"cache-control": "max-age=3600"})
        app = create_app(settings, keyring)
        async with serve(app, services.free_port()) as url, httpx.AsyncClient(base_url=url, timeout=30) as client:
            yield client


async def oidc_workflow(owner: Owner) -> tuple[dict[str, Any], str]:
    audience = f"https://hooks.example.test/ingest/ticks/{uuid.uuid4()}"
    config = {"auth": "oidc", "audience": audience, "service_account": SCHEDULER}
    return await create(owner, tick_body(config)), audience


async def test_an_oidc_tick_from_the_configured_service_account_is_stored(owner: Owner, oidc_app) -> None:
    workflow, audience = await oidc_workflow(owner)
    token = SIGNER.header(aud=audience, email=SCHEDULER)

    response = await oidc_app.post(
        f"/ingest/ticks/{workflow['id']}",
        headers={"authorization": token, "x-cloudscheduler-scheduletime": "2026-04-01T08:00:00Z"},
    )
    again = await oidc_app.post(
        f"/ingest/ticks/{workflow['id']}",
        headers={"authorization": token, "x-cloudscheduler-scheduletime": "2026-04-01T08:00:00Z"},
    )

    assert (response.status_code, again.status_code) == (202, 200), response.text
    [event] = await stored(owner, workflow["id"])
    assert event["verification"]["auth"] == "oidc"
    assert event["verification"]["email"] == SCHEDULER
    assert "authorization" not in event["headers"]


@pytest.mark.parametrize(
    ("claims", "code"),
    [
        ({"aud": "https://someone-else.example/"}, "oidc_wrong_audience"),
        ({"email": "intruder@evil.iam.gserviceaccount.com"}, "oidc_wrong_email"),
        ({"email_verified": False}, "oidc_email_not_verified"),
        ({"iss": "https://evil.example"}, "oidc_wrong_issuer"),
    ],
)
async def test_oidc_tokens_not_meant_for_this_trigger_are_401_and_nothing_is_stored(
    owner: Owner, oidc_app, claims: dict[str, Any], code: str
) -> None:
    workflow, audience = await oidc_workflow(owner)
    token = SIGNER.header(**({"aud": audience, "email": SCHEDULER} | claims))

    response = await oidc_app.post(f"/ingest/ticks/{workflow['id']}", headers={"authorization": token})

    assert response.status_code == 401
    assert response.json()["error"]["code"] == code
    assert await stored(owner, workflow["id"]) == []


async def test_an_oidc_tick_without_a_token_or_signed_by_a_stranger_is_401(owner: Owner, oidc_app) -> None:
    workflow, audience = await oidc_workflow(owner)
    stranger = GoogleSigner(SIGNER.kid)  # our key id, another key

    missing = await oidc_app.post(f"/ingest/ticks/{workflow['id']}")
    forged = await oidc_app.post(
        f"/ingest/ticks/{workflow['id']}", headers={"authorization": stranger.header(aud=audience, email=SCHEDULER)}
    )

    assert (missing.status_code, missing.json()["error"]["code"]) == (401, "oidc_missing_header")
    assert (forged.status_code, forged.json()["error"]["code"]) == (401, "oidc_bad_signature")
    assert await stored(owner, workflow["id"]) == []


async def test_an_oidc_tick_is_not_accepted_with_an_hmac_signature(owner: Owner, oidc_app) -> None:
    workflow, _ = await oidc_workflow(owner)
    endpoint = await create_endpoint(owner.client)
    headers = signed("standard-webhooks", endpoint["secret"], b"{}")

    response = await oidc_app.post(f"/ingest/ticks/{workflow['id']}", content=b"{}", headers=headers)

    assert response.status_code == 401
    assert json.loads(response.text)["error"]["code"] == "oidc_missing_header"
