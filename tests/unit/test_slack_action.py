"""The slack.post-message action: Slack stood in with respx, credentials from a fake source."""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

import httpx
import orjson
import pytest
import respx

from actions.base import ActionContext, Credential
from actions.errors import PermanentActionError, RetryableActionError
from actions.slack import CHAT_POST_MESSAGE_URL, run

BOT_TOKEN = "xoxb-test-bot-token"
SLACK = Credential("cred-slack", "slack", {"bot_token": BOT_TOKEN})
WEBHOOK_URL = "https://hooks.slack.com/services/T000/B000/SECRETPATHxyz"
CONFIG: dict[str, Any] = {"channel": "C0123", "text": "Order {{ trigger.body.order.id }} paid"}
BLOCKS = [{"type": "section", "text": {"type": "mrkdwn", "text": "*hi*"}}]
DATA = {"trigger": {"body": {"order": {"id": "A-7"}, "blocks": BLOCKS}}}


class FakeCredentials:
    async def load(self, credential_id: str, providers: Collection[str]) -> Credential:
        if credential_id != SLACK.id or SLACK.provider not in providers:
            raise PermanentActionError("no such credential")
        return SLACK


class RecordingLimiter:
    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []

    async def acquire(self, provider: str, key: str) -> None:
        self.calls.append((provider, key))


def ctx(client: httpx.AsyncClient, limiter: RecordingLimiter | None = None) -> ActionContext:
    return ActionContext(
        http=client,
        execution_id="exec-1",
        attempt=1,
        template_context=DATA,
        credential_id="cred-slack",
        credentials=FakeCredentials(),
        limiter=limiter,
    )


@respx.mock
async def test_bot_token_posts_with_chat_post_message_and_returns_channel_and_ts() -> None:
    route = respx.post(CHAT_POST_MESSAGE_URL).respond(200, json={"ok": True, "channel": "C0123", "ts": "1700.0001"})
    async with httpx.AsyncClient() as client:
        result = await run(ctx(client), CONFIG)

    assert result == {"via": "chat.postMessage", "channel": "C0123", "ts": "1700.0001"}
    request = route.calls.last.request
    assert request.headers["authorization"] == f"Bearer {BOT_TOKEN}"
    assert orjson.loads(request.content) == {"channel": "C0123", "text": "Order A-7 paid"}


@respx.mock
async def test_blocks_may_come_whole_from_trigger_data() -> None:
    route = respx.post(CHAT_POST_MESSAGE_URL).respond(200, json={"ok": True, "channel": "C0123", "ts": "1"})
    async with httpx.AsyncClient() as client:
        await run(ctx(client), {"channel": "C0123", "blocks": "{{ trigger.body.blocks }}"})

    assert orjson.loads(route.calls.last.request.content)["blocks"] == BLOCKS


@respx.mock
async def test_http_429_is_retryable_after_slacks_retry_after() -> None:
    respx.post(CHAT_POST_MESSAGE_URL).respond(
        429, headers={"retry-after": "30"}, json={"ok": False, "error": "ratelimited"}
    )
    async with httpx.AsyncClient() as client:
        with pytest.raises(RetryableActionError) as caught:
            await run(ctx(client), CONFIG)

    assert caught.value.retry_after_s == 30.0


@respx.mock
async def test_ok_false_ratelimited_and_internal_errors_are_retryable() -> None:
    respx.post(CHAT_POST_MESSAGE_URL).mock(
        side_effect=[
            httpx.Response(200, json={"ok": False, "error": "ratelimited"}),
            httpx.Response(200, json={"ok": False, "error": "internal_error"}),
        ]
    )
    async with httpx.AsyncClient() as client:
        for _ in range(2):
            with pytest.raises(RetryableActionError):
                await run(ctx(client), CONFIG)


@respx.mock
async def test_ok_false_invalid_auth_is_permanent_with_a_hint_and_no_token() -> None:
    respx.post(CHAT_POST_MESSAGE_URL).respond(200, json={"ok": False, "error": "invalid_auth"})
    async with httpx.AsyncClient() as client:
        with pytest.raises(PermanentActionError) as caught:
            await run(ctx(client), CONFIG)

    assert (
        str(caught.value) == "Slack refused the message: invalid_auth (the Slack credential was refused; reconnect it)"
    )
    assert BOT_TOKEN not in str(caught.value)


@respx.mock
@pytest.mark.parametrize("error", ["channel_not_found", "not_in_channel", "is_archived", "invalid_blocks"])
async def test_channel_and_payload_errors_are_permanent(error: str) -> None:
    respx.post(CHAT_POST_MESSAGE_URL).respond(200, json={"ok": False, "error": error})
    async with httpx.AsyncClient() as client:
        with pytest.raises(PermanentActionError, match=error):
            await run(ctx(client), CONFIG)


@respx.mock
async def test_the_limiter_paces_each_channel_of_a_credential_separately() -> None:
    respx.post(CHAT_POST_MESSAGE_URL).respond(200, json={"ok": True, "channel": "C0123", "ts": "1"})
    limiter = RecordingLimiter()
    async with httpx.AsyncClient() as client:
        await run(ctx(client, limiter), CONFIG)

    assert limiter.calls == [("slack", "cred-slack:C0123")]


@respx.mock
async def test_incoming_webhook_posts_the_message_to_its_url() -> None:
    route = respx.post(WEBHOOK_URL).respond(200, text="ok")
    chat = respx.post(CHAT_POST_MESSAGE_URL)
    async with httpx.AsyncClient() as client:
        result = await run(ctx(client), {"webhook_url": WEBHOOK_URL, "text": "Order {{ trigger.body.order.id }} paid"})

    assert result == {"via": "incoming_webhook", "channel": None, "ts": None}
    assert orjson.loads(route.calls.last.request.content) == {"text": "Order A-7 paid"}
    assert "authorization" not in route.calls.last.request.headers
    assert not chat.called


@respx.mock
async def test_incoming_webhook_errors_never_echo_its_url() -> None:
    respx.post(WEBHOOK_URL).mock(
        side_effect=[httpx.Response(404, text="no_service"), httpx.ConnectError("refused"), httpx.Response(500)]
    )
    config = {"webhook_url": WEBHOOK_URL, "text": "hi"}
    async with httpx.AsyncClient() as client:
        with pytest.raises(PermanentActionError) as gone:
            await run(ctx(client), config)
        with pytest.raises(RetryableActionError) as unreachable:
            await run(ctx(client), config)
        with pytest.raises(RetryableActionError) as failing:
            await run(ctx(client), config)

    assert str(gone.value) == "the Slack incoming webhook answered 404 (no_service); not retried"
    for caught in (gone, unreachable, failing):
        assert "SECRETPATH" not in str(caught.value)
        assert "/services/" not in str(caught.value)


@respx.mock
async def test_incoming_webhook_rate_limit_is_keyed_by_a_hash_of_the_url() -> None:
    respx.post(WEBHOOK_URL).respond(200, text="ok")
    limiter = RecordingLimiter()
    async with httpx.AsyncClient() as client:
        await run(ctx(client, limiter), {"webhook_url": WEBHOOK_URL, "text": "hi"})

    [(provider, key)] = limiter.calls
    assert provider == "slack"
    assert key.startswith("webhook:")
    assert "SECRETPATH" not in key


async def test_a_bot_token_post_needs_a_channel() -> None:
    async with httpx.AsyncClient() as client:
        with pytest.raises(PermanentActionError, match="channel: required"):
            await run(ctx(client), {"text": "hi"})
