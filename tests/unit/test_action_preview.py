"""Action previews: the request an attempt would send, built without sending, secrets masked."""

from __future__ import annotations

from typing import Any

import pytest

from actions import http, slack
from actions.base import MASK, PreviewContext
from actions.errors import PermanentActionError
from actions.templating import RenderBudget

CONTEXT: dict[str, Any] = {"trigger": {"body": {"order": 7, "name": "Ada"}}}


def ctx(**overrides: Any) -> PreviewContext:
    values: dict[str, Any] = {
        "template_context": CONTEXT,
        "budget": RenderBudget(10_000),
        "execution_id": "exec-1",
        **overrides,
    }
    return PreviewContext(**values)


def test_http_preview_is_the_request_an_attempt_builds() -> None:
    config = {
        "method": "PATCH",
        "url": "https://example.com/o/{{ trigger.body.order }}",
        "body": {"n": "{{ trigger.body.name }}"},
    }

    shown = http.preview(ctx(), config)

    assert (shown.method, shown.url, shown.body) == ("PATCH", "https://example.com/o/7", {"n": "Ada"})
    assert shown.headers == {
        "content-type": "application/json",
        "user-agent": "hookyard/0.1",
        "idempotency-key": "exec-1",
    }


@pytest.mark.parametrize("name", ["Authorization", "X-Api-Key", "x-shop-token", "X-Webhook-Secret", "Cookie"])
def test_http_preview_masks_headers_that_carry_credentials(name: str) -> None:
    shown = http.preview(ctx(), {"url": "https://example.com/", "headers": {name: "s3cr3t", "x-plain": "ok"}})

    assert shown.headers[name] == MASK and shown.headers["x-plain"] == "ok"


def test_http_preview_masks_the_signature_and_names_the_credential() -> None:
    shown = http.preview(ctx(credential_id="cred-1"), {"url": "https://example.com/", "sign": True})

    assert shown.headers["webhook-signature"] == MASK and shown.headers["webhook-id"] == "exec-1"
    assert any("cred-1" in note for note in shown.notes)


def test_http_preview_fails_as_an_attempt_fails() -> None:
    with pytest.raises(PermanentActionError, match="template error"):
        http.preview(ctx(), {"url": "https://example.com/{{ trigger.body.missing }}"})
    with pytest.raises(PermanentActionError, match="http"):
        http.preview(ctx(), {"url": "{{ trigger.body.name }}"})


def test_slack_preview_with_a_bot_token_masks_it() -> None:
    config = {"channel": "C1", "text": "hi {{ trigger.body.name }}"}

    shown = slack.preview(ctx(credential_id="cred-2", credential_provider="slack"), config)

    assert shown.url == slack.CHAT_POST_MESSAGE_URL
    assert shown.headers["authorization"] == f"Bearer {MASK}"
    assert shown.body == {"channel": "C1", "text": "hi Ada"}


def test_slack_preview_hides_an_incoming_webhook_url() -> None:
    config = {"webhook_url": "https://hooks.slack.com/services/T/B/secret", "text": "hi"}

    shown = slack.preview(ctx(), config)

    assert "secret" not in shown.url and shown.url.endswith(MASK)


def test_slack_preview_without_a_channel_for_a_bot_token_fails_as_an_attempt_would() -> None:
    with pytest.raises(PermanentActionError, match="channel"):
        slack.preview(ctx(credential_id="c", credential_provider="slack"), {"text": "hi"})
