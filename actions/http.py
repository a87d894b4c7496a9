"""`http.request`: call a URL with values from the trigger data."""

from __future__ import annotations

import base64
import email.utils
import hashlib
import hmac
import time
from collections.abc import Mapping
from typing import Any

import httpx
import orjson

from actions.base import MASK, ActionContext, ActionType, PreviewContext, RequestPreview
from actions.errors import PermanentActionError, RetryableActionError
from actions.templating import RenderBudget, TemplateError, render

CONFIG_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["url"],
    "additionalProperties": False,
    "properties": {
        "method": {"enum": ["GET", "POST", "PUT", "PATCH", "DELETE"], "default": "POST"},
        "url": {
            "type": "string",
            "minLength": 1,
            "maxLength": 2048,
            "description": "http(s) URL; may contain {{ trigger.… }} templates.",
        },
        "headers": {"type": "object", "additionalProperties": {"type": "string"}, "default": {}},
        "body": {"description": "JSON sent as the body (templated); a string is sent as text."},
        "timeout_s": {"type": "number", "exclusiveMinimum": 0, "maximum": 120, "default": 10},
        "sign": {
            "type": "boolean",
            "default": False,
            "description": "Sign with Standard Webhooks using the workflow's signing secret.",
        },
    },
}

_RETRY_STATUSES = {408, 425, 429}
_EXCERPT = 2048


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or HTTP date), capped at one hour."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return min(float(value), 3600.0)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    delay = when.timestamp() - (time.time() if now is None else now)
    return min(max(delay, 0.0), 3600.0)


def sign_standard_webhook(secret: str, msg_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    """Standard Webhooks headers for an outgoing request."""
    key = base64.b64decode(secret.removeprefix("whsec_"))
    signed = f"{msg_id}.{timestamp}.".encode() + body
    digest = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
    return {"webhook-id": msg_id, "webhook-timestamp": str(timestamp), "webhook-signature": f"v1,{digest}"}


def _build(ctx: ActionContext, config: Mapping[str, Any]) -> tuple[str, dict[str, str], bytes | None]:
    url, headers, _, content = build_request(ctx.template_context, config, ctx.render_budget())
    return url, headers, content


def build_request(
    context: Mapping[str, Any], config: Mapping[str, Any], budget: RenderBudget
) -> tuple[str, dict[str, str], object, bytes | None]:
    """URL, headers, the rendered body value and its encoding, checked as an attempt checks them."""
    try:
        url = render(config["url"], context, field="url", budget=budget)
        headers = render(config.get("headers", {}), context, field="headers", budget=budget)
        body_template = config.get("body")
        body = None if body_template is None else render(body_template, context, field="body", budget=budget)
    except TemplateError as exc:
        raise PermanentActionError(f"template error: {exc}") from exc
    # The URL is not echoed: after templating it may hold tokens.
    if not isinstance(url, str) or not url.lower().startswith(("http://", "https://")):
        raise PermanentActionError("url must be an http(s) URL after templating")
    # Control characters (a templated CRLF) would split the request line or a header.
    if _has_control(url):
        raise PermanentActionError("url contains a control character after templating")
    try:
        httpx.URL(url)
    except httpx.InvalidURL:
        raise PermanentActionError("url is not a valid URL after templating") from None
    out_headers = {str(k): str(v) for k, v in dict(headers).items()}  # type: ignore[call-overload]
    for name, value in out_headers.items():
        if _has_control(name) or _has_control(value.replace("\t", "")):
            raise PermanentActionError(f"header {name!r} contains a control character after templating")
    content: bytes | None = None
    if isinstance(body, str):
        content = body.encode()
        out_headers.setdefault("content-type", "text/plain; charset=utf-8")
    elif body is not None:
        content = orjson.dumps(body)
        out_headers.setdefault("content-type", "application/json")
    return url, out_headers, body, content


def preview(ctx: PreviewContext, config: Mapping[str, Any]) -> RequestPreview:
    """The request an attempt would send; credential and signature headers are masked."""
    url, headers, body, _ = build_request(ctx.template_context, config, ctx.budget)
    notes: list[str] = []
    if ctx.credential_id:
        notes.append(f"the headers of http credential {ctx.credential_id} are added when sent")
    if config.get("sign"):
        headers.update({"webhook-id": ctx.execution_id, "webhook-timestamp": "(time of sending)"})
        headers["webhook-signature"] = f"v1,{MASK}"
        notes.append("webhook-signature is computed when sent, with the workflow's signing secret")
    headers.setdefault("user-agent", "hookyard/0.1")
    headers.setdefault("idempotency-key", ctx.execution_id)
    return RequestPreview(config.get("method", "POST"), url, masked_headers(headers), body, tuple(notes))


def masked_headers(headers: Mapping[str, str]) -> dict[str, str]:
    """Headers with the values of those that carry credentials replaced by a mask."""
    return {name: MASK if _is_secret_header(name) else value for name, value in headers.items()}


def _is_secret_header(name: str) -> bool:
    lower = name.lower()
    return lower in _SECRET_HEADERS or any(word in lower for word in _SECRET_WORDS)


async def run(ctx: ActionContext, config: Mapping[str, Any]) -> dict[str, Any]:
    """Send the request; 2xx succeeds, 408/425/429/5xx and network errors retry, other 4xx fail."""
    url, headers, content = _build(ctx, config)
    secrets = await _apply_credential(ctx, headers)
    if config.get("sign"):
        if not ctx.signing_secret:
            raise PermanentActionError("signing is on but the workflow has no signing secret")
        # The execution id is stable across retries, so receivers can deduplicate on webhook-id.
        headers.update(sign_standard_webhook(ctx.signing_secret, ctx.execution_id, int(time.time()), content or b""))
    headers.setdefault("user-agent", "hookyard/0.1")
    headers.setdefault("idempotency-key", ctx.execution_id)
    started = time.monotonic()
    try:
        response = await ctx.http.request(
            config.get("method", "POST"),
            url,
            headers=headers,
            content=content,
            timeout=float(config.get("timeout_s", 10)),
        )
    except (httpx.InvalidURL, UnicodeEncodeError) as exc:
        # e.g. a header value outside ASCII: the same request would fail every time.
        raise PermanentActionError(f"the request cannot be sent as configured ({type(exc).__name__})") from None
    except httpx.TimeoutException as exc:
        raise RetryableActionError(f"timed out calling {_host(url)}") from exc
    except httpx.HTTPError as exc:
        raise RetryableActionError(f"could not reach {_host(url)}: {type(exc).__name__}") from exc
    result = {
        "status_code": response.status_code,
        "duration_ms": round((time.monotonic() - started) * 1000, 1),
        "response_body": _redacted(response.text, secrets)[:_EXCERPT],
    }
    code = response.status_code
    if 200 <= code < 300:
        return result
    if code in _RETRY_STATUSES or code >= 500:
        raise RetryableActionError(
            f"{_host(url)} answered {code}",
            retry_after_s=parse_retry_after(response.headers.get("retry-after")),
            result=result,
        )
    raise PermanentActionError(f"{_host(url)} answered {code}; not retried", result=result)


async def _apply_credential(ctx: ActionContext, headers: dict[str, str]) -> list[str]:
    """Add the workflow's `http` credential to `headers`, replacing any plain header of the same
    name; return the secret strings, to be kept out of the stored result."""
    if not ctx.credential_id:
        return []
    if ctx.credentials is None:
        raise PermanentActionError("http.request: credentials are not available to this worker")
    credential = await ctx.credentials.load(ctx.credential_id, providers={"http"})
    added, secrets = credential_headers(credential.secret)
    replaced = {name.lower() for name in added}
    for name in [name for name in headers if name.lower() in replaced]:
        del headers[name]
    headers.update(added)
    return secrets


def credential_headers(secret: Mapping[str, str]) -> tuple[dict[str, str], list[str]]:
    """The headers an `http` credential sends, and the secret strings they carry."""
    if "bearer_token" in secret:
        return {"authorization": f"Bearer {secret['bearer_token']}"}, [secret["bearer_token"]]
    if "username" in secret:
        basic = base64.b64encode(f"{secret['username']}:{secret.get('password', '')}".encode()).decode()
        return {"authorization": f"Basic {basic}"}, [secret.get("password", ""), basic]
    if "header" in secret:
        return {secret["header"]: secret.get("value", "")}, [secret.get("value", "")]
    raise PermanentActionError("the http credential has no header, bearer_token or username")


def _redacted(text: str, secrets: list[str]) -> str:
    """The response excerpt with any secret the target echoed back masked (before truncation, so
    a secret cut at the excerpt's end cannot leave a readable prefix)."""
    excerpt = text[: _EXCERPT + max((len(s) for s in secrets), default=0)]
    for secret in secrets:
        if secret:
            excerpt = excerpt.replace(secret, "********")
    return excerpt


# Header names that carry credentials; a literal value in one belongs in an `http` credential.
_SECRET_HEADERS = frozenset(
    {"authorization", "proxy-authorization", "x-api-key", "api-key", "apikey", "x-auth-token", "x-access-token"}
)
# Header names containing these carry secrets too; previews mask them (a wrong guess hides a value).
_SECRET_WORDS = ("auth", "token", "secret", "password", "signature", "cookie", "api-key", "apikey")


def plain_secrets(config: Mapping[str, Any]) -> list[str]:
    """Warnings for credential headers written into the config rather than a credential."""
    headers = config.get("headers")
    if not isinstance(headers, Mapping):
        return []
    return [
        f"action.config.headers.{name} holds a secret in plain config; move it to an http credential"
        for name, value in headers.items()
        if str(name).lower() in _SECRET_HEADERS and isinstance(value, str) and value and "{{" not in value
    ]


def _has_control(text: str) -> bool:
    return any(ord(char) < 32 or 127 <= ord(char) < 160 for char in text)


def _host(url: str) -> str:
    # Error messages name the host only: paths and queries may carry tokens.
    return httpx.URL(url).host or "the target"


ACTION = ActionType(
    name="http.request",
    description="Call a URL (method, headers and body templated from trigger data; an `http` credential adds auth).",
    config_schema=CONFIG_SCHEMA,
    run=run,
    wants_signing_secret=lambda config: bool(config.get("sign")),
    credential_providers=("http",),
    plain_secrets=plain_secrets,
    preview=preview,
)
