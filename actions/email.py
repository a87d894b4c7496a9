"""`email.send`: one e-mail through Resend or Postmark, failing over from one to the other.

Providers are tried in the configured order (`providers`; without it, the workflow's own
credential alone). A provider that is down (connection error, timeout, 5xx, 429) gets one
quick retry inside the attempt, honouring `Retry-After` up to two seconds, and then the next
provider is tried. A provider that refuses the message itself (an invalid address, an
unverified sender) ends the attempt at once with a permanent error naming the provider:
another provider would refuse it too, or deliver what the owner's setup forbids. A refused
credential (bad key, account not allowed to send) fails over too, but the attempt is
permanent if no provider could send. When every provider was down the attempt is retryable,
and the workflow's retry policy starts again from the first provider.

Idempotency: Resend drops a repeated request carrying the same `Idempotency-Key` header for
24 hours; the key is the execution id plus the provider, the same on every attempt. Postmark
has no such mechanism, so a Postmark request is retried inside the attempt only when it was
certainly not accepted (connection refused, 429), but a later attempt after an ambiguous
failure (timeout, 5xx) may send the message twice. Failing over after an ambiguous failure
can likewise deliver once per provider: failover trades at-most-once for delivery.

`send_resend`, `send_postmark` and `send_with_failover` take a plain `EmailMessage`, so
other actions can send through the same clients.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

import asyncpg
import httpx

from actions.base import ActionConfigError, ActionContext, ActionType, CredentialSource, RateLimiter, json_object
from actions.errors import PermanentActionError, RetryableActionError
from actions.http import parse_retry_after
from actions.ratelimit import acquire
from actions.templating import RenderBudget, TemplateError, render
from schemas.store.credentials import credential_provider

RESEND_URL = "https://api.resend.com/emails"
POSTMARK_URL = "https://api.postmarkapp.com/email"
EMAIL_PROVIDERS = ("resend", "postmark")
MAX_RECIPIENTS = 50  # Resend: 50 `to` addresses; Postmark: 50 across To, Cc and Bcc.

_QUICK_RETRY_CAP_S = 2.0
_QUICK_RETRY_DEFAULT_S = 0.5
_DETAIL_CHARS = 300
_USER_AGENT = "hookyard/0.1"
# Resend tag names and values: ASCII letters, digits, underscores and dashes only.
_RESEND_TAG_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")
# Postmark error codes that mean the account or token cannot send, not that the message is bad.
_POSTMARK_ACCOUNT_CODES = {10, 405, 412, 413}
_RESEND_AUTH_ERRORS = {"missing_api_key", "invalid_api_key", "restricted_api_key"}

_ADDRESSES: dict[str, Any] = {
    "oneOf": [
        {"type": "string", "minLength": 1},
        {"type": "array", "items": {"type": "string", "minLength": 1}, "minItems": 1, "maxItems": MAX_RECIPIENTS},
    ]
}
_TEMPLATED_TEXT: dict[str, Any] = {"type": "string", "maxLength": 1_000_000}

CONFIG_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["from", "to", "subject"],
    "additionalProperties": False,
    "anyOf": [{"required": ["text"]}, {"required": ["html"]}],
    "properties": {
        "providers": {
            "type": "array",
            "minItems": 1,
            "maxItems": 4,
            "description": "Providers in the order they are tried, e.g. Resend then Postmark. "
            "Without it the workflow's action.credential_id (Resend or Postmark) is used alone.",
            "items": {
                "type": "object",
                "additionalProperties": False,
                "required": ["provider", "credential_id"],
                "properties": {
                    "provider": {"enum": list(EMAIL_PROVIDERS)},
                    "credential_id": {"type": "string", "format": "uuid"},
                },
            },
        },
        "from": {"type": "string", "minLength": 1, "description": "Sender, e.g. 'Acme <hi@acme.com>' (templated)."},
        "to": {**_ADDRESSES, "description": "Recipient or list of recipients (templated)."},
        "cc": _ADDRESSES,
        "bcc": _ADDRESSES,
        "reply_to": _ADDRESSES,
        "subject": {"type": "string", "minLength": 1, "maxLength": 2000},
        "text": {**_TEMPLATED_TEXT, "description": "Plain-text body (templated); text, html or both."},
        "html": {**_TEMPLATED_TEXT, "description": "HTML body (templated)."},
        "tags": {
            "type": "object",
            "maxProperties": 20,
            "propertyNames": {"pattern": "^[A-Za-z0-9_-]{1,256}$"},
            "additionalProperties": {"type": "string"},
            "description": "Name -> value (templated). Resend tags (other characters in values become '_'); "
            "Postmark Metadata, and a tag named 'category' is also Postmark's Tag.",
        },
        "timeout_s": {"type": "number", "exclusiveMinimum": 0, "maximum": 60, "default": 10},
    },
}


@dataclass(frozen=True, slots=True)
class EmailMessage:
    """One e-mail, as every provider client takes it."""

    sender: str
    to: tuple[str, ...]
    subject: str
    text: str | None = None
    html: str | None = None
    cc: tuple[str, ...] = ()
    bcc: tuple[str, ...] = ()
    reply_to: tuple[str, ...] = ()
    tags: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class EmailRoute:
    """A provider to try and the credential to use; provider None takes the credential's own."""

    provider: str | None
    credential_id: str


@dataclass(frozen=True, slots=True)
class Delivery:
    """Who accepted the message, and which providers were given up on before."""

    provider: str
    message_id: str | None
    failed_over_from: tuple[str, ...] = ()
    failover_errors: tuple[str, ...] = ()

    def as_result(self) -> dict[str, Any]:
        """The execution result."""
        return {
            "provider": self.provider,
            "message_id": self.message_id,
            "failed_over_from": list(self.failed_over_from),
            "failover_errors": list(self.failover_errors),
        }


class ProviderError(Exception):
    """A provider did not send. The message names the provider and never holds a secret."""

    def __init__(self, provider: str, message: str) -> None:
        super().__init__(f"{provider}: {message}")
        self.provider = provider


class EmailRejected(ProviderError):
    """The provider refused this message (invalid address, unverified sender): do not fail over."""


class ProviderAuthError(ProviderError):
    """The provider refused the credential or the account may not send: fail over."""


class ProviderUnavailable(ProviderError):
    """The provider is down, overloaded or did not answer in time: fail over.

    `accepted_unknown` is true when the request may have been accepted (a timeout or a 5xx
    after the body was sent), so a provider without idempotency keys must not repeat it.
    """

    def __init__(
        self, provider: str, message: str, *, retry_after_s: float | None = None, accepted_unknown: bool = True
    ) -> None:
        super().__init__(provider, message)
        self.retry_after_s = retry_after_s
        self.accepted_unknown = accepted_unknown


# --- provider clients ------------------------------------------------------------------------


async def send_resend(
    http: httpx.AsyncClient,
    api_key: str,
    message: EmailMessage,
    *,
    idempotency_key: str | None = None,
    timeout_s: float = 10.0,
) -> str | None:
    """Send through Resend (`POST /emails`); returns Resend's email id."""
    body: dict[str, Any] = {"from": message.sender, "to": list(message.to), "subject": message.subject}
    for name, addresses in (("cc", message.cc), ("bcc", message.bcc), ("reply_to", message.reply_to)):
        if addresses:
            body[name] = list(addresses)
    if message.text is not None:
        body["text"] = message.text
    if message.html is not None:
        body["html"] = message.html
    if message.tags:
        body["tags"] = [{"name": k, "value": _RESEND_TAG_UNSAFE.sub("_", v)[:256]} for k, v in message.tags.items()]
    headers = {"authorization": f"Bearer {api_key}", "user-agent": _USER_AGENT}
    if idempotency_key:
        headers["idempotency-key"] = idempotency_key
    response = await _post(http, "resend", RESEND_URL, headers, body, timeout_s)
    data = json_object(response)
    if response.is_success:
        return _string(data.get("id"))
    name = str(data.get("name") or "")
    detail = _detail(data.get("message"), api_key)
    label = f"answered {response.status_code}{f' {name}' if name else ''}"
    code = response.status_code
    if code in (401, 403) and name in _RESEND_AUTH_ERRORS:
        raise ProviderAuthError("resend", f"{label}: {detail}")
    if code == 429:
        # Rate or daily/monthly quota: either way Resend did not take this request.
        raise ProviderUnavailable("resend", label, retry_after_s=_retry_after(response), accepted_unknown=False)
    if code == 409 and "concurrent" in name:
        # The same key is in flight elsewhere; asking again soon gets its answer.
        raise ProviderUnavailable("resend", label, retry_after_s=1.0)
    if code >= 500:
        raise ProviderUnavailable("resend", label, retry_after_s=_retry_after(response))
    raise EmailRejected("resend", f"{label}: {detail}")


async def send_postmark(
    http: httpx.AsyncClient, server_token: str, message: EmailMessage, *, timeout_s: float = 10.0
) -> str | None:
    """Send through Postmark (`POST /email`); returns Postmark's MessageID.

    Postmark has no idempotency key: callers must not repeat a request whose fate is unknown.
    """
    body: dict[str, Any] = {"From": message.sender, "To": ", ".join(message.to), "Subject": message.subject}
    for name, addresses in (("Cc", message.cc), ("Bcc", message.bcc), ("ReplyTo", message.reply_to)):
        if addresses:
            body[name] = ", ".join(addresses)
    if message.text is not None:
        body["TextBody"] = message.text
    if message.html is not None:
        body["HtmlBody"] = message.html
    if message.tags:
        body["Metadata"] = dict(message.tags)
        if "category" in message.tags:
            body["Tag"] = message.tags["category"]
    headers = {"x-postmark-server-token": server_token, "accept": "application/json", "user-agent": _USER_AGENT}
    response = await _post(http, "postmark", POSTMARK_URL, headers, body, timeout_s)
    data = json_object(response)
    error_code = data.get("ErrorCode", 0)
    if not isinstance(error_code, int):
        error_code = -1
    if response.is_success and error_code == 0:
        return _string(data.get("MessageID"))
    code = response.status_code
    label = f"answered {code}{f' ErrorCode {error_code}' if error_code else ''}"
    detail = _detail(data.get("Message"), server_token)
    if code == 401 or error_code in _POSTMARK_ACCOUNT_CODES:
        raise ProviderAuthError("postmark", f"{label}: {detail}")
    if code == 429:
        raise ProviderUnavailable("postmark", label, retry_after_s=_retry_after(response), accepted_unknown=False)
    if code >= 500:
        raise ProviderUnavailable("postmark", label, retry_after_s=_retry_after(response))
    raise EmailRejected("postmark", f"{label}: {detail}")


async def _post(
    http: httpx.AsyncClient, provider: str, url: str, headers: dict[str, str], body: dict[str, Any], timeout_s: float
) -> httpx.Response:
    try:
        return await http.post(url, headers=headers, json=body, timeout=timeout_s)
    except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
        # Nothing was sent: safe to repeat anywhere.
        raise ProviderUnavailable(
            provider, f"could not connect ({type(exc).__name__})", accepted_unknown=False
        ) from exc
    except httpx.TimeoutException as exc:
        raise ProviderUnavailable(provider, f"timed out after {timeout_s:g}s") from exc
    except httpx.HTTPError as exc:
        raise ProviderUnavailable(provider, f"request failed ({type(exc).__name__})") from exc


_Sender = Callable[[httpx.AsyncClient, Mapping[str, str], EmailMessage, str, float], Awaitable[str | None]]


async def _via_resend(
    http: httpx.AsyncClient, secret: Mapping[str, str], message: EmailMessage, idempotency_key: str, timeout_s: float
) -> str | None:
    return await send_resend(
        http, _secret(secret, "resend", "api_key"), message, idempotency_key=idempotency_key, timeout_s=timeout_s
    )


async def _via_postmark(
    http: httpx.AsyncClient, secret: Mapping[str, str], message: EmailMessage, idempotency_key: str, timeout_s: float
) -> str | None:
    return await send_postmark(http, _secret(secret, "postmark", "server_token"), message, timeout_s=timeout_s)


_SENDERS: dict[str, _Sender] = {"resend": _via_resend, "postmark": _via_postmark}
# Providers that deduplicate on an idempotency key, so an ambiguous failure may be retried.
_IDEMPOTENT = {"resend"}


async def send_with_failover(
    http: httpx.AsyncClient,
    credentials: CredentialSource,
    routes: Sequence[EmailRoute],
    message: EmailMessage,
    *,
    idempotency_key: str,
    limiter: RateLimiter | None = None,
    timeout_s: float = 10.0,
    on_failover: Callable[[str, str], None] | None = None,
) -> Delivery:
    """Send through the first route that accepts the message (see the module docstring).

    Credentials are loaded only when their route is tried. Raises `PermanentActionError` when
    a provider rejects the message or no credential was usable, `RetryableActionError` when
    every provider was down (`retry_after_s`: the shortest delay all of them asked for).
    """
    given_up: list[str] = []
    errors: list[str] = []
    auth_only = True
    retry_afters: list[float | None] = []
    for route in routes:
        providers: Collection[str] = {route.provider} if route.provider else set(EMAIL_PROVIDERS)
        try:
            credential = await credentials.load(route.credential_id, providers=providers)
        except PermanentActionError as exc:
            # An unusable credential (deleted, wrong provider) is like a refused one: try the next.
            given_up.append(route.provider or "email")
            errors.append(f"{route.provider or 'email'}: {exc}")
            continue
        provider = credential.provider
        if given_up and on_failover is not None:
            on_failover(given_up[-1], provider)
        try:
            message_id = await _send_with_quick_retry(
                http, provider, credential.id, credential.secret, message, idempotency_key, limiter, timeout_s
            )
        except EmailRejected as exc:
            rejected: dict[str, Any] = {"provider": provider, "failed_over_from": given_up, "failover_errors": errors}
            reason = f"{provider} rejected the e-mail: {_after_provider(exc)}"
            raise PermanentActionError(reason, result=rejected) from exc
        except ProviderAuthError as exc:
            given_up.append(provider)
            errors.append(str(exc))
        except ProviderUnavailable as exc:
            given_up.append(provider)
            errors.append(str(exc))
            auth_only = False
            retry_afters.append(exc.retry_after_s)
        else:
            return Delivery(provider, message_id, tuple(given_up), tuple(errors))
    failed: dict[str, Any] = {"failed_over_from": given_up, "failover_errors": errors}
    summary = "; ".join(errors) or "no provider configured"
    if auth_only:
        raise PermanentActionError(f"no e-mail provider accepted its credential: {summary}", result=failed)
    retry_after = None if None in retry_afters else min(a for a in retry_afters if a is not None)
    raise RetryableActionError(f"no e-mail provider could send: {summary}", retry_after_s=retry_after, result=failed)


async def _send_with_quick_retry(
    http: httpx.AsyncClient,
    provider: str,
    credential_id: str,
    secret: Mapping[str, str],
    message: EmailMessage,
    idempotency_key: str,
    limiter: RateLimiter | None,
    timeout_s: float,
) -> str | None:
    send = _SENDERS[provider]
    key = f"{idempotency_key}:{provider}"
    for attempt in (1, 2):
        await acquire(limiter, provider, credential_id)
        try:
            return await send(http, secret, message, key, timeout_s)
        except ProviderUnavailable as exc:
            delay = _quick_retry_delay(provider, exc)
            if attempt == 2 or delay is None:
                raise
            await asyncio.sleep(delay)
    raise AssertionError("unreachable")


def _quick_retry_delay(provider: str, exc: ProviderUnavailable) -> float | None:
    """How long to wait before the one quick retry, or None to move on to the next provider."""
    if exc.accepted_unknown and provider not in _IDEMPOTENT:
        return None
    delay = _QUICK_RETRY_DEFAULT_S if exc.retry_after_s is None else exc.retry_after_s
    return delay if delay <= _QUICK_RETRY_CAP_S else None


# --- the action ------------------------------------------------------------------------------


async def run(ctx: ActionContext, config: Mapping[str, Any]) -> dict[str, Any]:
    """Send the templated e-mail; the result names the provider and its message id."""
    message = build_message(ctx.template_context, config, ctx.render_budget())
    routes = _routes(ctx, config)
    if ctx.credentials is None:
        raise PermanentActionError("email.send: credentials are not available to this worker")
    delivery = await send_with_failover(
        ctx.http,
        ctx.credentials,
        routes,
        message,
        idempotency_key=ctx.execution_id,
        limiter=ctx.limiter,
        timeout_s=float(config.get("timeout_s", 10)),
        on_failover=ctx.record_failover,
    )
    return delivery.as_result()


def build_message(
    context: Mapping[str, Any], config: Mapping[str, Any], budget: RenderBudget | None = None
) -> EmailMessage:
    """The e-mail a config describes, templated from `context` within `budget` (default-sized
    if not given); PermanentActionError if unusable."""
    budget = RenderBudget() if budget is None else budget
    try:
        values = {
            name: render(config[name], context, field=name, budget=budget)
            for name in ("from", "to", "cc", "bcc", "reply_to", "subject", "text", "html", "tags")
            if name in config
        }
    except TemplateError as exc:
        raise PermanentActionError(f"template error: {exc}") from exc
    to = _addresses(values["to"], "to")
    cc = _addresses(values.get("cc"), "cc")
    bcc = _addresses(values.get("bcc"), "bcc")
    if not to:
        raise PermanentActionError("to: no recipient after templating")
    if len(to) + len(cc) + len(bcc) > MAX_RECIPIENTS:
        raise PermanentActionError(f"to/cc/bcc: more than {MAX_RECIPIENTS} recipients")
    text = _optional_text(values.get("text"), "text")
    html = _optional_text(values.get("html"), "html")
    if not text and not html:
        raise PermanentActionError("text/html: the e-mail has no body after templating")
    tags = values.get("tags") or {}
    if not isinstance(tags, Mapping):
        raise PermanentActionError("tags: expected an object after templating")
    return EmailMessage(
        sender=_single_line(_required_text(values["from"], "from"), "from"),
        to=to,
        subject=_single_line(_required_text(values["subject"], "subject"), "subject"),
        text=text,
        html=html,
        cc=cc,
        bcc=bcc,
        reply_to=_addresses(values.get("reply_to"), "reply_to"),
        tags={str(k): _required_text(v, f"tags.{k}") for k, v in tags.items()},
    )


def _routes(ctx: ActionContext, config: Mapping[str, Any]) -> list[EmailRoute]:
    configured = config.get("providers")
    if configured:
        return [EmailRoute(p["provider"], str(p["credential_id"])) for p in configured]
    if ctx.credential_id:
        return [EmailRoute(None, ctx.credential_id)]
    raise PermanentActionError("email.send needs a Resend or Postmark credential: set credential_id or providers")


async def check_credentials(
    conn: asyncpg.Connection, owner_id: UUID, config: Mapping[str, Any], credential_id: UUID | None, name: str
) -> None:
    """Every credential an e-mail config names is the owner's and for the provider it is listed as;
    without `providers`, the workflow's own credential must be a Resend or Postmark one."""
    configured = config.get("providers") or []
    for index, entry in enumerate(configured):
        where = f"action.config.providers[{index}].credential_id"
        found = await credential_provider(conn, owner_id, UUID(str(entry["credential_id"])))
        if found is None:
            raise ActionConfigError(where, "no such credential")
        if found != entry["provider"]:
            raise ActionConfigError(where, f"credential is for {found}, not {entry['provider']}")
    if configured:
        return
    if credential_id is None:
        raise ActionConfigError(
            "action.credential_id", f"{name} needs a Resend or Postmark credential (or config.providers)"
        )
    found = await credential_provider(conn, owner_id, credential_id)
    if found not in EMAIL_PROVIDERS:
        raise ActionConfigError("action.credential_id", "needs a Resend or Postmark credential of yours")


async def check_config(
    conn: asyncpg.Connection, owner_id: UUID, config: Mapping[str, Any], credential_id: UUID | None
) -> None:
    """The credentials `email.send` would use are the owner's and of the right providers."""
    await check_credentials(conn, owner_id, config, credential_id, "email.send")


# --- helpers ---------------------------------------------------------------------------------


def _addresses(value: object, field_name: str) -> tuple[str, ...]:
    if value is None:
        return ()
    items = value if isinstance(value, list | tuple) else [value]
    out: list[str] = []
    for item in items:
        if not isinstance(item, str) or not item.strip():
            raise PermanentActionError(f"{field_name}: each address must be a non-empty string after templating")
        out.append(_single_line(item.strip(), field_name))
    return tuple(out)


def _required_text(value: object, field_name: str) -> str:
    text = _optional_text(value, field_name)
    if not text:
        raise PermanentActionError(f"{field_name}: empty after templating")
    return text


def _optional_text(value: object, field_name: str) -> str | None:
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    raise PermanentActionError(f"{field_name}: expected text after templating, got {type(value).__name__}")


def _single_line(value: str, field_name: str) -> str:
    # Addresses and subjects become mail headers: line breaks there would forge new ones.
    if "\r" in value or "\n" in value:
        raise PermanentActionError(f"{field_name}: must not contain line breaks")
    return value


def _secret(secret: Mapping[str, str], provider: str, name: str) -> str:
    value = secret.get(name)
    if not value:
        raise PermanentActionError(f"the {provider} credential has no {name}")
    return value


def _string(value: object) -> str | None:
    return None if value is None else str(value)


def _detail(value: object, secret: str) -> str:
    text = str(value or "no details given")
    if secret:
        text = text.replace(secret, "[redacted]")
    return text[:_DETAIL_CHARS]


def _retry_after(response: httpx.Response) -> float | None:
    return parse_retry_after(response.headers.get("retry-after"))


def _after_provider(exc: ProviderError) -> str:
    return str(exc).removeprefix(f"{exc.provider}: ")


ACTION = ActionType(
    name="email.send",
    description="Send an e-mail through Resend or Postmark, failing over between them (fields templated).",
    config_schema=CONFIG_SCHEMA,
    run=run,
    credential_providers=EMAIL_PROVIDERS,
    check_config=check_config,
)
