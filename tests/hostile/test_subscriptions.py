"""Hostile subscription requests: targets inside the deployment, malformed URLs, oversize and
ill-typed fields, other owners' ids. Each gets a clear 4xx and changes nothing; never a 500."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ingest.api.subscriptions import CREATE_SCHEMA
from tests.conftest import Owner, Receiver

pytestmark = pytest.mark.integration

PRIVATE_TARGETS = [
    "http://10.0.0.1/hook",
    "http://169.254.169.254/latest/meta-data/",
    "http://192.168.1.10:8080/",
    "http://[fd12:3456::1]/",
    "http://0.0.0.0/",
    "http://167772161/",  # 10.0.0.1 written as a number
]
BAD_TARGETS = [
    "ftp://example.com/hook",
    "javascript:alert(1)",
    "not a url",
    "http://",
    "http://user:password@127.0.0.1/hook",
    "http://exa mple.com/",
    "http://no-such-host.invalid/hook",
    "http://" + "a" * 2100 + ".com/",
    "https://xn--/",  # a malformed IDNA label: was a 500
    "http://127.0.0.1:65536/",
    "http://127.0.0.1:0/",
]


async def _create(owner: Owner, body: dict[str, Any]) -> Any:
    return await owner.client.post("/api/subscriptions", json=body)


async def _count(owner: Owner) -> int:
    return len((await owner.client.get("/api/subscriptions?limit=200")).json()["items"])


@pytest.mark.parametrize("target", PRIVATE_TARGETS)
async def test_a_target_inside_the_deployment_is_refused_at_save(owner: Owner, target: str) -> None:
    response = await _create(owner, {"target_url": target, "event_types": ["execution.failed"]})
    assert response.status_code == 422, response.text
    assert response.json()["error"]["field"] == "target_url"
    assert "egress refused" in response.json()["error"]["message"]
    assert await _count(owner) == 0


@pytest.mark.parametrize("target", BAD_TARGETS)
async def test_a_malformed_target_is_refused_with_a_422_naming_it(owner: Owner, target: str) -> None:
    response = await _create(owner, {"target_url": target, "event_types": ["execution.failed"]})
    assert response.status_code == 422, response.text
    assert response.json()["error"]["field"] == "target_url"


async def test_changing_the_target_to_a_private_address_is_refused_and_changes_nothing(
    owner: Owner, receiver: Receiver
) -> None:
    created = (await _create(owner, {"target_url": receiver.url + "/ok", "event_types": ["execution.failed"]})).json()
    response = await owner.client.patch(f"/api/subscriptions/{created['id']}", json={"target_url": "http://10.1.2.3/"})
    assert response.status_code == 422
    assert (await owner.client.get(f"/api/subscriptions/{created['id']}")).json()["target_url"] == receiver.url + "/ok"


@pytest.mark.parametrize(
    "body",
    [
        {"event_types": ["execution.failed"]},
        {"target_url": "http://127.0.0.1/x"},
        {"target_url": "http://127.0.0.1/x", "event_types": []},
        {"target_url": "http://127.0.0.1/x", "event_types": ["execution.exploded"]},
        {"target_url": "http://127.0.0.1/x", "event_types": ["execution.failed", "execution.failed"]},
        {"target_url": "http://127.0.0.1/x", "event_types": "execution.failed"},
        {"target_url": ["http://127.0.0.1/x"], "event_types": ["execution.failed"]},
        {"target_url": "http://127.0.0.1/x", "event_types": ["execution.failed"], "secret": "whsec_mine"},
        {"target_url": "http://127.0.0.1/x", "event_types": ["execution.failed"], "filters": {"workflow_ids": ["x"]}},
        {
            "target_url": "http://127.0.0.1/x",
            "event_types": ["execution.failed"],
            "filters": {"workflow_ids": [str(uuid.uuid4()) for _ in range(101)]},
        },
        {
            "target_url": "http://127.0.0.1/x",
            "event_types": ["execution.failed"],
            "filters": {"action_types": ["a" * 101]},
        },
        {"target_url": "http://127.0.0.1/x", "event_types": ["execution.failed"], "active": "yes"},
    ],
)
async def test_ill_formed_bodies_get_422_and_create_nothing(owner: Owner, body: dict[str, Any]) -> None:
    response = await _create(owner, body)
    assert response.status_code == 422, response.text
    assert response.json()["error"]["message"]
    assert await _count(owner) == 0


async def test_another_owners_subscription_is_404_for_every_operation(
    owner: Owner, other_owner: Owner, receiver: Receiver
) -> None:
    created = (await _create(owner, {"target_url": receiver.url + "/mine", "event_types": ["execution.failed"]})).json()
    sid = created["id"]
    client = other_owner.client
    answers = [
        await client.get(f"/api/subscriptions/{sid}"),
        await client.patch(f"/api/subscriptions/{sid}", json={"active": False}),
        await client.post(f"/api/subscriptions/{sid}/rotate-secret"),
        await client.get(f"/api/subscriptions/{sid}/deliveries"),
        await client.post(f"/api/subscriptions/{sid}/deliveries/{uuid.uuid4()}/retry"),
        await client.delete(f"/api/subscriptions/{sid}"),
    ]
    assert [a.status_code for a in answers] == [404] * 6
    assert (await client.get("/api/subscriptions")).json()["items"] == []
    assert (await owner.client.get(f"/api/subscriptions/{sid}")).json()["active"] is True


async def test_the_secret_is_shown_once(owner: Owner, receiver: Receiver) -> None:
    created = (await _create(owner, {"target_url": receiver.url + "/s", "event_types": ["execution.failed"]})).json()
    assert created["secret"].startswith("whsec_")
    shown = (await owner.client.get(f"/api/subscriptions/{created['id']}")).text
    listed = (await owner.client.get("/api/subscriptions")).text
    assert created["secret"] not in shown and created["secret"] not in listed


async def test_a_subscriptions_internal_workflow_is_not_listed_nor_reachable_as_a_workflow(
    owner: Owner, receiver: Receiver, pool: Any
) -> None:
    created = (await _create(owner, {"target_url": receiver.url + "/i", "event_types": ["execution.failed"]})).json()
    async with pool.acquire() as conn:
        workflow_id = await conn.fetchval(
            "SELECT workflow_id FROM subscriptions WHERE id = $1", uuid.UUID(created["id"])
        )
    assert (await owner.client.get("/api/workflows")).json()["items"] == []
    assert (await owner.client.get(f"/api/workflows/{workflow_id}")).status_code == 404
    assert (await owner.client.delete(f"/api/workflows/{workflow_id}")).status_code == 404


async def test_a_workflow_cannot_use_the_internal_deliver_action(owner: Owner) -> None:
    body = {
        "name": "sneaky",
        "trigger": {"type": "schedule.cron", "config": {"cron": "0 0 1 1 *"}},
        "action": {"type": "hookyard.deliver", "config": {"subscription_id": "x", "target_url": "http://10.0.0.1/"}},
    }
    response = await owner.client.post("/api/workflows", json=body)
    assert response.status_code == 422


async def test_retrying_a_delivery_of_another_subscription_is_404(owner: Owner, receiver: Receiver) -> None:
    a = (await _create(owner, {"target_url": receiver.url + "/a", "event_types": ["execution.failed"]})).json()
    response = await owner.client.post(f"/api/subscriptions/{a['id']}/deliveries/{uuid.uuid4()}/retry")
    assert response.status_code == 404


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    target=st.text(max_size=300),
    event_types=st.lists(st.text(max_size=40), max_size=5),
    extra=st.dictionaries(st.sampled_from(["filters", "active", "x"]), st.none() | st.integers() | st.text(max_size=5)),
)
async def test_arbitrary_bodies_never_get_a_server_error(
    owner: Owner, target: str, event_types: list[str], extra: dict[str, Any]
) -> None:
    response = await _create(owner, {"target_url": target, "event_types": event_types, **extra})
    assert response.status_code < 500, response.text
    assert set(CREATE_SCHEMA["properties"]) >= {"target_url", "event_types"}


async def test_an_owner_cannot_fan_out_beyond_the_subscription_cap(owner: Owner, receiver: Receiver) -> None:
    from schemas.store.subscriptions import MAX_SUBSCRIPTIONS_PER_OWNER

    body = {"target_url": receiver.url + "/many", "event_types": ["execution.failed"]}
    for _ in range(MAX_SUBSCRIPTIONS_PER_OWNER):
        assert (await _create(owner, body)).status_code == 201
    response = await _create(owner, body)
    assert response.status_code == 409
    assert str(MAX_SUBSCRIPTIONS_PER_OWNER) in response.json()["error"]["message"]


@settings(max_examples=300, deadline=None)
@given(
    scheme=st.sampled_from(["http://", "https://", "HTTP://", "ftp://", ""]),
    host=st.text(max_size=40),
    rest=st.text(alphabet=st.characters(codec="utf-8"), max_size=20),
)
async def test_target_checking_answers_only_invalid_or_ok(scheme: str, host: str, rest: str) -> None:
    from actions.egress import EgressPolicy
    from ingest.api.subscriptions import check_target
    from ingest.errors import Invalid

    # Names that could resolve are kept out: the run must not depend on (or wait for) DNS.
    url = f"{scheme}{host}.invalid{rest}" if host.isascii() and host.isalnum() else f"{scheme}{host}{rest}"
    with contextlib.suppress(Invalid):
        await asyncio.wait_for(check_target(EgressPolicy(), url), 10)
