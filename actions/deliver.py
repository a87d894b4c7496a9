"""`hookyard.deliver`: send one notification to a subscription's target (internal; owners
cannot configure it: each subscription's internal workflow runs it).

A Standard Webhooks signed POST of the notification envelope. `webhook-id` is the notification
id, the same on every attempt and every subscription, so receivers can deduplicate; during a
secret rotation every valid secret signs (space-separated signatures). The egress policy of
`http.request` applies (the worker's client enforces it on every connection); only the first
512 bytes of the answer are read and kept.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import urljoin
from uuid import UUID

import httpx
import orjson

from actions.base import MASK, ActionContext, ActionType
from actions.errors import PermanentActionError, RetryableActionError
from actions.http import parse_retry_after, sign_standard_webhook

NAME = "hookyard.deliver"
# The one event type whose deliveries carry a connect link, signed at send time.
NEEDS_RECONNECT = "credential.needs_reconnect"
TIMEOUT_S = 10.0
_EXCERPT = 512
_RETRY_STATUSES = {408, 425, 429}

CONFIG_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["subscription_id", "target_url"],
    "properties": {
        "subscription_id": {"type": "string"},
        "target_url": {"type": "string", "maxLength": 2048},
        "base_url": {"type": "string", "description": "What relative `links` are resolved against."},
    },
}


def envelope_body(trigger: Mapping[str, Any], base_url: str) -> bytes:
    """The JSON sent: the stored envelope with its `data.links` made absolute."""
    data = trigger.get("data")
    if isinstance(data, dict) and isinstance(data.get("links"), dict) and base_url:
        links = {
            k: urljoin(base_url.rstrip("/") + "/", v) if isinstance(v, str) else v for k, v in data["links"].items()
        }
        trigger = {**trigger, "data": {**data, "links": links}}
    return orjson.dumps(trigger)


def connect_link_url(trigger: Mapping[str, Any], base_url: str, sign: Callable[[UUID], str]) -> str | None:
    """The signed connect link of a credential.needs_reconnect notification, made now.

    The stored notification holds only the link's id (useless without the keyring's
    signature), so the bearer link exists only in the body sent: never in PostgreSQL, Temporal
    history, logs or errors. Every delivery of the notification carries the same link, which
    works once.
    """
    data = trigger.get("data")
    if trigger.get("type") != NEEDS_RECONNECT or not isinstance(data, dict):
        return None
    link = data.get("connect_link")
    try:
        link_id = UUID(str(link["id"])) if isinstance(link, dict) else None
    except (KeyError, ValueError):
        return None
    if link_id is None:
        return None
    return f"{base_url.rstrip('/')}/oauth/connect/{sign(link_id)}"


def with_connect_link(trigger: Mapping[str, Any], url: str) -> dict[str, Any]:
    """The envelope with `data.connect_link.url` set."""
    data = dict(trigger["data"])
    data["connect_link"] = {**data["connect_link"], "url": url}
    return {**trigger, "data": data}


def signature_headers(secrets: str, msg_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    """Standard Webhooks headers signed by each space-separated secret (newest first)."""
    signatures = [sign_standard_webhook(s, msg_id, timestamp, body)["webhook-signature"] for s in secrets.split()]
    return {"webhook-id": msg_id, "webhook-timestamp": str(timestamp), "webhook-signature": " ".join(signatures)}


async def run(ctx: ActionContext, config: Mapping[str, Any]) -> dict[str, Any]:
    """POST the notification; 2xx succeeds, 410 disables the subscription, 408/425/429/5xx and
    network errors retry (after Retry-After when given), other answers fail."""
    trigger = ctx.template_context.get("trigger")
    if not isinstance(trigger, dict) or not isinstance(trigger.get("id"), str):
        raise PermanentActionError("the delivery carries no notification")
    if not ctx.signing_secret:
        raise PermanentActionError("the subscription has no valid signing secret")
    url = str(config["target_url"])
    base_url = str(config.get("base_url") or "")
    link = None if ctx.sign_connect_link is None else connect_link_url(trigger, base_url, ctx.sign_connect_link)
    if link is not None:
        trigger = with_connect_link(trigger, link)
    body = envelope_body(trigger, base_url)
    headers = signature_headers(ctx.signing_secret, trigger["id"], int(time.time()), body)
    headers.update({"content-type": "application/json", "user-agent": "hookyard/0.1"})
    started = time.monotonic()
    try:
        # Streamed: only the start of the answer is read, however much the receiver sends.
        async with ctx.http.stream("POST", url, content=body, headers=headers, timeout=TIMEOUT_S) as response:
            excerpt = await _excerpt(response)
    except (httpx.InvalidURL, UnicodeEncodeError) as exc:
        raise PermanentActionError(f"the target URL cannot be used ({type(exc).__name__})") from None
    except httpx.TimeoutException as exc:
        raise RetryableActionError(f"timed out calling {_host(url)}") from exc
    except httpx.HTTPError as exc:
        raise RetryableActionError(f"could not reach {_host(url)}: {type(exc).__name__}") from exc
    if link is not None:
        excerpt = masked(excerpt, link.rsplit("/", 1)[-1])
    return _outcome(url, response, excerpt, round((time.monotonic() - started) * 1000, 1))


def masked(excerpt: str, token: str) -> str:
    """The excerpt without the connect link token, whole or cut off at the excerpt's end (a
    receiver echoing the body back must not put the link into the stored result)."""
    excerpt = excerpt.replace(token, MASK)
    link_id = token.split(".", 1)[0]
    cut = excerpt.find(link_id)
    return excerpt if cut < 0 else excerpt[:cut] + MASK


async def _excerpt(response: httpx.Response) -> str:
    """The first _EXCERPT bytes of the answer, as text."""
    data = b""
    async for chunk in response.aiter_raw():
        data += chunk
        if len(data) >= _EXCERPT:
            break
    return data[:_EXCERPT].decode("utf-8", "replace")


def _outcome(url: str, response: httpx.Response, excerpt: str, duration_ms: float) -> dict[str, Any]:
    code = response.status_code
    result: dict[str, Any] = {"status_code": code, "duration_ms": duration_ms, "response_body": excerpt}
    if 200 <= code < 300:
        return result
    if code == 410:  # the receiver says it is gone for good: the subscription is disabled
        raise PermanentActionError(f"{_host(url)} answered 410 Gone", result={**result, "gone": True})
    if code in _RETRY_STATUSES or code >= 500:
        retry_after = parse_retry_after(response.headers.get("retry-after"))
        raise RetryableActionError(f"{_host(url)} answered {code}", retry_after_s=retry_after, result=result)
    raise PermanentActionError(f"{_host(url)} answered {code}; not retried", result=result)


def _host(url: str) -> str:
    try:
        return httpx.URL(url).host or "the target"
    except httpx.InvalidURL:
        return "the target"


ACTION = ActionType(
    name=NAME,
    description="Deliver a notification to a subscription's target (internal).",
    config_schema=CONFIG_SCHEMA,
    run=run,
    wants_signing_secret=lambda config: True,
)
