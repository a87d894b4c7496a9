"""`slack.post-message`: post to a Slack channel with a bot token or an incoming webhook.

With a bot token (the workflow's `slack` credential) the message goes through
`chat.postMessage` and the result holds the channel id and the message `ts`. With an
incoming webhook (a `slack_webhook` credential, or the older plain `webhook_url` in the
config, which the API flags) it goes to that URL; Slack answers only "ok", so there is no
`ts`. Anyone holding a webhook URL can post with it, so it is treated as a secret: it never
appears in errors, results or logs, and rate-limit keys use its hash.

Slack has no idempotency key for posting: an attempt cut off after Slack accepted the
message (a timeout, `internal_error`) posts it again when the attempt is retried.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any
from uuid import UUID

import asyncpg
import httpx

from actions.base import MASK, ActionConfigError, ActionContext, ActionType, Credential, PreviewContext, RequestPreview
from actions.errors import PermanentActionError, RetryableActionError
from actions.http import parse_retry_after
from actions.ratelimit import acquire
from actions.templating import RenderBudget, TemplateError, render
from schemas.store.credentials import credential_provider

CHAT_POST_MESSAGE_URL = "https://slack.com/api/chat.postMessage"
# A bot token (chat.postMessage) or an incoming-webhook URL.
CREDENTIAL_PROVIDERS = ("slack", "slack_webhook")

CONFIG_SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "anyOf": [{"required": ["text"]}, {"required": ["blocks"]}],
    "properties": {
        "channel": {
            "type": "string",
            "minLength": 1,
            "maxLength": 200,
            "description": "Channel id (C…) or name; required with a bot token (templated).",
        },
        "text": {
            "type": "string",
            "minLength": 1,
            "maxLength": 40000,
            "description": "Message text, or the notification fallback when blocks are given (templated).",
        },
        "blocks": {
            "type": ["array", "string"],
            "maxItems": 50,
            "description": "Block Kit blocks (templated), or one {{ … }} expression that yields them.",
        },
        "thread_ts": {"type": "string", "description": "Reply in the thread of this message ts (templated)."},
        "webhook_url": {
            "type": "string",
            "pattern": "^https://hooks\\.slack\\.com/",
            "maxLength": 500,
            "writeOnly": True,
            "description": "An incoming-webhook URL in plain config (flagged; prefer a slack_webhook "
            "credential); kept out of errors.",
        },
        "timeout_s": {"type": "number", "exclusiveMinimum": 0, "maximum": 60, "default": 10},
    },
}

# `ok: false` errors that a later attempt may get past; every other error is permanent.
_RETRYABLE_ERRORS = {
    "ratelimited",
    "rate_limited",
    "internal_error",
    "fatal_error",
    "service_unavailable",
    "request_timeout",
    "team_added_to_org",
}
_HINTS = {
    "not_in_channel": "invite the app to the channel",
    "channel_not_found": "check the channel id and that the app can see it",
    "is_archived": "the channel is archived",
    "invalid_auth": "the Slack credential was refused; reconnect it",
    "not_authed": "the Slack credential was refused; reconnect it",
    "token_revoked": "the Slack credential was revoked; reconnect it",
    "account_inactive": "the Slack credential belongs to a deactivated user or workspace",
    "missing_scope": "the app needs the chat:write scope",
}
_WEBHOOK_CODE_CHARS = 60
_USER_AGENT = "hookyard/0.1"


async def run(ctx: ActionContext, config: Mapping[str, Any]) -> dict[str, Any]:
    """Post the templated message; bot token -> channel and ts, webhook -> "ok"."""
    message = _message(ctx.template_context, config, ctx.render_budget())
    timeout_s = float(config.get("timeout_s", 10))
    webhook_url = config.get("webhook_url")
    if webhook_url:
        return await _post_webhook(ctx, str(webhook_url), message, timeout_s)
    if not ctx.credential_id:
        raise PermanentActionError("slack.post-message needs a Slack credential or a webhook_url")
    if ctx.credentials is None:
        raise PermanentActionError("slack.post-message: credentials are not available to this worker")
    credential = await ctx.credentials.load(ctx.credential_id, providers=set(CREDENTIAL_PROVIDERS))
    if credential.provider == "slack_webhook":
        return await _post_webhook(ctx, credential.secret.get("url", ""), message, timeout_s)
    return await _post_message(ctx, credential, message, timeout_s)


async def _post_message(
    ctx: ActionContext, credential: Credential, message: dict[str, Any], timeout_s: float
) -> dict[str, Any]:
    channel = message.get("channel")
    if not channel:
        raise PermanentActionError("channel: required when posting with a bot token")
    token = credential.secret.get("bot_token")
    if not token:
        raise PermanentActionError("the Slack credential has no bot_token")
    # Slack limits chat.postMessage per channel, so the bucket is the credential's channel.
    await acquire(ctx.limiter, "slack", f"{credential.id}:{channel}")
    headers = {"authorization": f"Bearer {token}", "user-agent": _USER_AGENT}
    response = await _post(ctx.http, CHAT_POST_MESSAGE_URL, headers, message, timeout_s)
    _raise_for_http(response, "Slack")
    try:
        data = response.json()
    except ValueError:
        data = None
    if not isinstance(data, dict):
        raise RetryableActionError(f"Slack answered {response.status_code} without a JSON body")
    if data.get("ok") is True:
        return {"via": "chat.postMessage", "channel": data.get("channel"), "ts": data.get("ts")}
    error = str(data.get("error") or "unknown_error")
    detail = _describe(error, data)
    if error in _RETRYABLE_ERRORS:
        retry_after = parse_retry_after(response.headers.get("retry-after"))
        raise RetryableActionError(f"Slack refused the message for now: {detail}", retry_after_s=retry_after)
    raise PermanentActionError(f"Slack refused the message: {detail}")


async def _post_webhook(ctx: ActionContext, url: str, message: dict[str, Any], timeout_s: float) -> dict[str, Any]:
    if not url.startswith("https://hooks.slack.com/"):
        raise PermanentActionError("webhook_url must be a Slack incoming-webhook URL (https://hooks.slack.com/...)")
    await acquire(ctx.limiter, "slack", "webhook:" + hashlib.sha256(url.encode()).hexdigest()[:32])
    response = await _post(ctx.http, url, {"user-agent": _USER_AGENT}, message, timeout_s)
    _raise_for_http(response, "the Slack incoming webhook")
    if response.is_success:
        return {"via": "incoming_webhook", "channel": message.get("channel"), "ts": None}
    # Webhook errors are short codes (invalid_payload, no_service, channel_is_archived, ...).
    code = response.text.strip()
    shown = f" ({code})" if code.replace("_", "").isalnum() and len(code) <= _WEBHOOK_CODE_CHARS else ""
    raise PermanentActionError(f"the Slack incoming webhook answered {response.status_code}{shown}; not retried")


async def _post(
    http: httpx.AsyncClient, url: str, headers: dict[str, str], body: dict[str, Any], timeout_s: float
) -> httpx.Response:
    # Errors name the host only: a webhook URL's path is its secret.
    try:
        return await http.post(url, headers=headers, json=body, timeout=timeout_s)
    except httpx.TimeoutException as exc:
        raise RetryableActionError(f"timed out calling {httpx.URL(url).host}") from exc
    except httpx.HTTPError as exc:
        raise RetryableActionError(f"could not reach {httpx.URL(url).host}: {type(exc).__name__}") from exc


def _raise_for_http(response: httpx.Response, who: str) -> None:
    code = response.status_code
    if code == 429:
        retry_after = parse_retry_after(response.headers.get("retry-after"))
        raise RetryableActionError(f"{who} is rate limiting (429)", retry_after_s=retry_after)
    if code >= 500:
        raise RetryableActionError(f"{who} answered {code}")


def _describe(error: str, data: Mapping[str, Any]) -> str:
    detail = error
    if error in _HINTS:
        detail += f" ({_HINTS[error]})"
    metadata = data.get("response_metadata")
    messages = metadata.get("messages") if isinstance(metadata, dict) else None
    if isinstance(messages, list) and messages:
        detail += ": " + "; ".join(str(m)[:200] for m in messages[:3])
    return detail


def _message(context: Mapping[str, Any], config: Mapping[str, Any], budget: RenderBudget) -> dict[str, Any]:
    """The chat.postMessage / webhook body: channel, text, blocks, thread_ts after templating."""
    try:
        values = {
            name: render(config[name], context, field=name, budget=budget)
            for name in ("channel", "text", "blocks", "thread_ts")
            if name in config
        }
    except TemplateError as exc:
        raise PermanentActionError(f"template error: {exc}") from exc
    message: dict[str, Any] = {}
    for name in ("channel", "text", "thread_ts"):
        value = values.get(name)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, str | int | float):
            raise PermanentActionError(f"{name}: expected text after templating, got {type(value).__name__}")
        if str(value):
            message[name] = str(value)
    blocks = values.get("blocks")
    if blocks is not None:
        if not isinstance(blocks, list) or not all(isinstance(b, dict) for b in blocks):
            raise PermanentActionError("blocks: expected a list of Block Kit objects after templating")
        message["blocks"] = blocks
    if not message.get("text") and not message.get("blocks"):
        raise PermanentActionError("text/blocks: the message is empty after templating")
    return message


def preview(ctx: PreviewContext, config: Mapping[str, Any]) -> RequestPreview:
    """The POST an attempt would make; a webhook URL (the secret) and the bot token are masked."""
    message = _message(ctx.template_context, config, ctx.budget)
    headers = {"content-type": "application/json", "user-agent": _USER_AGENT}
    if config.get("webhook_url"):
        return RequestPreview("POST", f"https://hooks.slack.com/{MASK}", headers, message)
    if ctx.credential_provider == "slack_webhook":
        note = f"sent to the incoming-webhook URL of credential {ctx.credential_id}"
        return RequestPreview("POST", f"https://hooks.slack.com/{MASK}", headers, message, (note,))
    if not message.get("channel"):
        raise PermanentActionError("channel: required when posting with a bot token")
    headers["authorization"] = f"Bearer {MASK}"
    note = f"authorised with the bot token of credential {ctx.credential_id}"
    return RequestPreview("POST", CHAT_POST_MESSAGE_URL, headers, message, (note,))


async def check_config(
    conn: asyncpg.Connection, owner_id: UUID, config: Mapping[str, Any], credential_id: UUID | None
) -> None:
    """A workflow names a Slack bot-token credential of the owner and a channel, or a
    `slack_webhook` credential, or (flagged) a plain webhook URL."""
    if config.get("webhook_url"):
        return
    if credential_id is None:
        raise ActionConfigError("action.credential_id", "slack.post-message needs a Slack credential or webhook_url")
    provider = await credential_provider(conn, owner_id, credential_id)
    if provider not in CREDENTIAL_PROVIDERS:
        raise ActionConfigError("action.credential_id", "needs a Slack or slack_webhook credential of yours")
    if provider == "slack" and not config.get("channel"):
        raise ActionConfigError("action.config.channel", "required when posting with a bot token")


def plain_secrets(config: Mapping[str, Any]) -> list[str]:
    """A plain `webhook_url` still works, but belongs in a `slack_webhook` credential."""
    if not config.get("webhook_url"):
        return []
    return ["action.config.webhook_url holds a secret in plain config; move it to a slack_webhook credential"]


ACTION = ActionType(
    name="slack.post-message",
    description="Post a message to a Slack channel (bot token or incoming webhook; text and blocks templated).",
    config_schema=CONFIG_SCHEMA,
    run=run,
    credential_providers=CREDENTIAL_PROVIDERS,
    check_config=check_config,
    plain_secrets=plain_secrets,
    preview=preview,
)
