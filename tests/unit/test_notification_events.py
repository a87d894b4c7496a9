"""The notification types beyond execution.*: registered with valid schemas, and the connect
link of credential.needs_reconnect made only in the body sent."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import parse_qs, urlsplit
from uuid import UUID, uuid4

import httpx
import pytest
import respx
from jsonschema import Draft202012Validator
from standardwebhooks import Webhook

from actions.base import MASK, ActionContext
from actions.deliver import run
from oauth.crypto import Keyring
from oauth.google import GoogleOAuth
from oauth.links import link_token, verify_link_token
from schemas.notification_types import EVENT_TYPES

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
TARGET = "https://receiver.example/hooks"
CONFIG = {"subscription_id": "s", "target_url": TARGET, "base_url": "https://hookyard.example"}
KEYRING = Keyring([("k1", bytes(range(32)))])
NEW_TYPES = (
    "newsletter.progress",
    "newsletter.completed",
    "credential.needs_reconnect",
    "trigger.sync_failed",
    "gmail.watch_renewed_failed",
    "gmail.watch_expiring",
)


def _needs_reconnect(link_id: UUID, event_type: str = "credential.needs_reconnect") -> dict[str, Any]:
    return {
        "id": str(uuid4()),
        "type": event_type,
        "version": 1,
        "timestamp": "2026-12-04T11:00:00+00:00",
        "data": {
            "reason": "revoked",
            "detail": "revoked: invalid_grant",
            "credential": {"id": str(uuid4()), "provider": "google", "account": "boss@example.com"},
            "paused_workflows": [],
            "connect_link": {"id": str(link_id), "expires_at": "2026-12-07T11:00:00+00:00"},
            "links": {"credential": "/api/credentials/x"},
        },
    }


def _ctx(client: httpx.AsyncClient, trigger: dict[str, Any]) -> ActionContext:
    return ActionContext(
        http=client,
        execution_id="exec-1",
        attempt=1,
        template_context={"trigger": trigger},
        signing_secret=SECRET,
        sign_connect_link=lambda link_id: link_token(KEYRING, link_id),
    )


@pytest.mark.parametrize("name", NEW_TYPES)
def test_each_event_type_is_registered_with_a_valid_data_schema(name: str) -> None:
    registered = EVENT_TYPES[name]
    assert registered.version == 1 and registered.description
    Draft202012Validator.check_schema(dict(registered.data_schema))


@respx.mock
async def test_a_needs_reconnect_delivery_carries_the_connect_link_signed_at_send_time() -> None:
    route = respx.post(TARGET).mock(return_value=httpx.Response(204))
    link_id = uuid4()
    stored = _needs_reconnect(link_id)
    async with httpx.AsyncClient() as client:
        await run(_ctx(client, stored), CONFIG)
    payload = Webhook(SECRET).verify(route.calls.last.request.content, dict(route.calls.last.request.headers))
    url = payload["data"]["connect_link"]["url"]
    assert url.startswith("https://hookyard.example/oauth/connect/")
    assert verify_link_token(KEYRING, url.rsplit("/", 1)[-1]) == link_id
    assert "url" not in stored["data"]["connect_link"], "the stored notification never holds the link"
    Draft202012Validator(dict(EVENT_TYPES["credential.needs_reconnect"].data_schema)).validate(payload["data"])


@respx.mock
async def test_no_other_event_type_gets_a_connect_link() -> None:
    route = respx.post(TARGET).mock(return_value=httpx.Response(204))
    async with httpx.AsyncClient() as client:
        await run(_ctx(client, _needs_reconnect(uuid4(), "execution.failed")), CONFIG)
    assert "url" not in json.loads(route.calls.last.request.content)["data"]["connect_link"]


@respx.mock
async def test_a_receiver_echoing_the_link_finds_it_masked_in_the_stored_excerpt() -> None:
    route = respx.post(TARGET).mock(side_effect=lambda request: httpx.Response(200, content=request.content))
    link_id = uuid4()
    async with httpx.AsyncClient() as client:
        result = await run(_ctx(client, _needs_reconnect(link_id)), CONFIG)
    assert route.called
    assert link_token(KEYRING, link_id) not in result["response_body"]
    assert MASK in result["response_body"]


@respx.mock
async def test_a_link_cut_off_at_the_end_of_the_excerpt_is_masked_too() -> None:
    link_id = uuid4()
    token = link_token(KEYRING, link_id)
    respx.post(TARGET).mock(return_value=httpx.Response(200, content=b"x" * 440 + token.encode()))
    async with httpx.AsyncClient() as client:
        result = await run(_ctx(client, _needs_reconnect(link_id)), CONFIG)
    assert str(link_id) not in result["response_body"] and result["response_body"].endswith(MASK)


def test_a_link_for_one_account_asks_google_to_sign_in_with_it() -> None:
    google = GoogleOAuth("client", "secret", "https://hookyard.example/oauth/callback")
    url = google.authorization_url(["openid", "email"], "state", "v" * 64, "boss@example.com")
    assert parse_qs(urlsplit(url).query)["login_hint"] == ["boss@example.com"]
    assert "login_hint" not in google.authorization_url(["openid"], "state", "v" * 64)
