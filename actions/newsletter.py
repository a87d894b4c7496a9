"""`email.send-newsletter`: one e-mail to a list of recipients, personalised per recipient.

The recipients are listed in the config (`recipients`) or found in the trigger data
(`recipients_path`, e.g. `body.subscribers`); each is an address or an object with an `email`
and any fields templates may use as `{{ recipient.<field> }}`. Subject, bodies, sender,
reply-to and tags are templated per recipient from `trigger`, `recipient`, `execution` and
`workflow`. Messages go through the same Resend and Postmark clients and failover as
`email.send` (actions/email.py), one request per recipient.

A newsletter outlives one attempt of an action, so the worker hands it over to a workflow of
its own (worker/newsletter/): it waits for `send_at`, then sends in batches of `batch_size`
with `concurrency` requests in flight and a `pause_s` pause between batches, and checks
between batches whether the owner cancelled. A recipient that fails never stops the others.
The execution ends `succeeded` (newsletter status `sent` or `partially_sent`), `failed`
(nobody could be sent to) or `cancelled`, with counts in its result.

Nobody is sent to twice when a worker is lost mid-send:

- Resend requests carry `Idempotency-Key: <execution id>:<recipient index>:resend`, so a
  recipient whose request was cut off is simply sent again: Resend drops the repeat.
- Postmark has no idempotency key. Before a request to it the recipient is recorded as
  `sending`; a retry finding a recipient still `sending` marks it `unknown` and does not send
  again. Likewise, when every provider was unavailable and Postmark was among those tried, the
  recipient is `unknown`, not retried: its error does not tell whether it was accepted.
- As with `email.send`, failing over after an ambiguous failure (a timeout or a 5xx) may
  deliver once per provider: failover trades at-most-once for delivery.

This module holds the pure parts and the final summary; the SQL is in
schemas/store/newsletter.py and the Temporal side in worker/newsletter/.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

import asyncpg
import httpx

from actions import email
from actions.base import (
    ActionConfigError,
    ActionContext,
    ActionType,
    Credential,
    CredentialSource,
    OwnWorkflow,
    RateLimiter,
)
from actions.email import EmailMessage, EmailRoute, build_message, send_with_failover
from actions.errors import PermanentActionError, RetryableActionError
from actions.templating import DEFAULT_MAX_RENDERED_BYTES, RenderBudget, TemplateError, render
from schemas.paths import PATH_PATTERN, PathError, PathNotFound, json_type, resolve
from schemas.store import executions as execution_store
from schemas.store import newsletter as store
from schemas.store.newsletter import NewRecipient

NAME = "email.send-newsletter"
MAX_RECIPIENTS = 50_000
DEFAULT_BATCH_SIZE = 50
DEFAULT_CONCURRENCY = 10
DEFAULT_PAUSE_S = 1.0
DEFAULT_MAX_ATTEMPTS = 3
MAX_DELAY = timedelta(days=366)
# Providers that drop a repeated request with the same idempotency key (see actions/email.py).
IDEMPOTENT_PROVIDERS = frozenset({"resend"})

_MAX_ADDRESS_CHARS = 320
# A comma or semicolon would make one entry several recipients (Postmark splits `To` on them);
# line breaks would forge mail headers.
_ADDRESS_UNSAFE = re.compile(r"[\r\n,;]")
_ANGLE_ADDRESS = re.compile(r"<([^<>]*)>\s*$")
_RETRY_CAP_S = 30.0
_ERRORS_SHOWN = 10
_MESSAGE_FIELDS = ("from", "subject", "text", "html", "reply_to", "tags")

_RECIPIENT: dict[str, Any] = {
    "oneOf": [
        {"type": "string", "minLength": 1},
        {
            "type": "object",
            "required": ["email"],
            "properties": {"email": {"type": "string", "minLength": 1}},
        },
    ]
}

CONFIG_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["from", "subject"],
    "additionalProperties": False,
    "allOf": [
        {"anyOf": [{"required": ["text"]}, {"required": ["html"]}]},
        {"oneOf": [{"required": ["recipients"]}, {"required": ["recipients_path"]}]},
    ],
    "properties": {
        "providers": email.CONFIG_SCHEMA["properties"]["providers"],
        "from": email.CONFIG_SCHEMA["properties"]["from"],
        "reply_to": email.CONFIG_SCHEMA["properties"]["reply_to"],
        "subject": email.CONFIG_SCHEMA["properties"]["subject"],
        "text": {
            **email.CONFIG_SCHEMA["properties"]["text"],
            "description": "Plain-text body (templated per recipient).",
        },
        "html": email.CONFIG_SCHEMA["properties"]["html"],
        "tags": email.CONFIG_SCHEMA["properties"]["tags"],
        "timeout_s": email.CONFIG_SCHEMA["properties"]["timeout_s"],
        "recipients": {
            "type": "array",
            "minItems": 1,
            "maxItems": MAX_RECIPIENTS,
            "items": _RECIPIENT,
            "description": "Addresses, or objects with an `email` and fields for `{{ recipient.<field> }}`.",
        },
        "recipients_path": {
            "type": "string",
            "pattern": PATH_PATTERN,
            "description": "Where the recipient list is in the trigger data, e.g. body.subscribers.",
        },
        "send_at": {
            "type": "string",
            "minLength": 1,
            "maxLength": 200,
            "description": "Start sending at this RFC 3339 time (templated, e.g. {{ trigger.body.send_at }}).",
        },
        "batch_size": {"type": "integer", "minimum": 1, "maximum": 500, "default": DEFAULT_BATCH_SIZE},
        "concurrency": {
            "type": "integer",
            "minimum": 1,
            "maximum": 100,
            "default": DEFAULT_CONCURRENCY,
            "description": "Requests in flight at once (provider rate limits still apply).",
        },
        "pause_s": {
            "type": "number",
            "minimum": 0,
            "maximum": 3600,
            "default": DEFAULT_PAUSE_S,
            "description": "Pause between batches; cancelling takes effect between batches.",
        },
        "max_attempts": {
            "type": "integer",
            "minimum": 1,
            "maximum": 10,
            "default": DEFAULT_MAX_ATTEMPTS,
            "description": "Tries per recipient while every provider is unavailable.",
        },
    },
}


@dataclass(frozen=True, slots=True)
class Pacing:
    """How a newsletter is sent, from its config."""

    batch_size: int
    concurrency: int
    pause_s: float
    max_attempts: int
    timeout_s: float


def pacing(config: Mapping[str, Any]) -> Pacing:
    """The batch size, concurrency, pause, attempts and timeout a config asks for."""
    return Pacing(
        batch_size=int(config.get("batch_size", DEFAULT_BATCH_SIZE)),
        concurrency=int(config.get("concurrency", DEFAULT_CONCURRENCY)),
        pause_s=float(config.get("pause_s", DEFAULT_PAUSE_S)),
        max_attempts=int(config.get("max_attempts", DEFAULT_MAX_ATTEMPTS)),
        timeout_s=float(config.get("timeout_s", 10)),
    )


def template_context(
    execution_id: UUID, attempt: int, trigger_data: Any, workflow_id: UUID, workflow_name: str
) -> dict[str, Any]:
    """What templates see besides `recipient` (the same names as every other action's)."""
    return {
        "trigger": trigger_data,
        "execution": {"id": str(execution_id), "attempt": attempt},
        "workflow": {"id": str(workflow_id), "name": workflow_name},
    }


# --- recipients ------------------------------------------------------------------------------


def recipients(config: Mapping[str, Any], trigger_data: Any) -> tuple[list[NewRecipient], int]:
    """The recipient list, in order, and how many repeated addresses were dropped.

    An unusable entry (not an address, an address with a comma or line break) is kept, with an
    error, so it shows up as a failed recipient. Raises PermanentActionError when there is no
    list to send to.
    """
    listed: object
    if "recipients" in config:
        listed = config["recipients"]
    else:
        path = str(config.get("recipients_path", ""))
        try:
            listed = resolve(trigger_data, path)
        except (PathError, PathNotFound) as exc:
            raise PermanentActionError(f"recipients_path: {exc}") from None
    if not isinstance(listed, list):
        raise PermanentActionError(f"recipients_path: expected a list of recipients, found {json_type(listed)}")
    if not listed:
        raise PermanentActionError("recipients: the list is empty")
    if len(listed) > MAX_RECIPIENTS:
        raise PermanentActionError(f"recipients: {len(listed)} recipients, more than {MAX_RECIPIENTS}")
    out: list[NewRecipient] = []
    seen: set[str] = set()
    duplicates = 0
    for index, entry in enumerate(listed):
        recipient = _recipient(index, entry)
        if recipient.error is None:
            key = _dedup_key(recipient.address)
            if key in seen:
                duplicates += 1
                continue
            seen.add(key)
        out.append(recipient)
    return out, duplicates


def _recipient(index: int, entry: object) -> NewRecipient:
    if isinstance(entry, Mapping):
        address = entry.get("email")
        variables = {str(k): v for k, v in entry.items() if k != "email"}
    else:
        address, variables = entry, {}
    if not isinstance(address, str):
        shown = f"an object whose email is {json_type(address)}" if isinstance(entry, Mapping) else json_type(entry)
        return NewRecipient(index, "", variables, f"not an e-mail address: {shown}")
    address = address.strip()
    problem = _address_problem(address)
    return NewRecipient(index, address[:_MAX_ADDRESS_CHARS], variables, problem)


def _address_problem(address: str) -> str | None:
    if not address:
        return "not an e-mail address: empty"
    if len(address) > _MAX_ADDRESS_CHARS:
        return f"not an e-mail address: longer than {_MAX_ADDRESS_CHARS} characters"
    if _ADDRESS_UNSAFE.search(address):
        return "not an e-mail address: contains a comma, semicolon or line break"
    if "@" not in address:
        return "not an e-mail address: no @"
    return None


def _dedup_key(address: str) -> str:
    """`Ada <ADA@x.test>` and `ada@x.test` are one recipient."""
    match = _ANGLE_ADDRESS.search(address)
    return (match.group(1) if match else address).strip().lower()


def send_at(config: Mapping[str, Any], context: Mapping[str, Any], now: datetime) -> datetime | None:
    """When to start sending (None: now). A time in the past means now; more than a year ahead
    or an unreadable time is a PermanentActionError."""
    if "send_at" not in config:
        return None
    try:
        value = render(config["send_at"], context, field="send_at")
    except TemplateError as exc:
        raise PermanentActionError(f"template error: {exc}") from None
    moment = parse_time(value)
    if moment is None:
        raise PermanentActionError(f"send_at: expected an RFC 3339 time with a zone, got {_shown(value)}")
    if moment - now > MAX_DELAY:
        raise PermanentActionError(f"send_at: more than {MAX_DELAY.days} days ahead")
    return moment if moment > now else None


def parse_time(value: object) -> datetime | None:
    """An RFC 3339 time with a zone (or Unix seconds), in UTC; None if it is neither."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        try:
            return datetime.fromtimestamp(float(value), UTC)
        except (OverflowError, OSError, ValueError):
            return None
    if not isinstance(value, str):
        return None
    try:
        moment = datetime.fromisoformat(value.strip())
    except ValueError:
        return None
    return None if moment.tzinfo is None else moment.astimezone(UTC)


def _shown(value: object) -> str:
    text = repr(value) if isinstance(value, str) else json_type(value)
    return text if len(text) <= 60 else text[:60] + "..."


# --- sending ---------------------------------------------------------------------------------


def message_for(
    config: Mapping[str, Any],
    context: Mapping[str, Any],
    index: int,
    address: str,
    variables: Mapping[str, Any],
    max_rendered_bytes: int = DEFAULT_MAX_RENDERED_BYTES,
) -> EmailMessage:
    """The e-mail for one recipient; PermanentActionError if its templates cannot be filled
    within `max_rendered_bytes`."""
    recipient = {**variables, "email": address, "index": index}
    fields = {name: config[name] for name in _MESSAGE_FIELDS if name in config}
    # The address goes in through the context, never into a template: data is not re-rendered.
    fields["to"] = "{{ recipient.email }}"
    return build_message({**context, "recipient": recipient}, fields, RenderBudget(max_rendered_bytes))


def routes(config: Mapping[str, Any], credential_id: str | None) -> list[EmailRoute]:
    """Providers to try, in order: `providers`, else the workflow's own credential."""
    configured = config.get("providers")
    if configured:
        return [EmailRoute(p["provider"], str(p["credential_id"])) for p in configured]
    if credential_id:
        return [EmailRoute(None, credential_id)]
    raise PermanentActionError(f"{NAME} needs a Resend or Postmark credential: set credential_id or providers")


class CachedCredentials:
    """Loads each credential once: every recipient of a batch uses the same few."""

    def __init__(self, source: CredentialSource) -> None:
        self._source = source
        self._loaded: dict[tuple[str, frozenset[str]], Credential] = {}
        self._lock = asyncio.Lock()

    async def load(self, credential_id: str, providers: Collection[str]) -> Credential:
        """The credential, from the source the first time."""
        key = (credential_id, frozenset(providers))
        async with self._lock:
            if key not in self._loaded:
                self._loaded[key] = await self._source.load(credential_id, providers)
            return self._loaded[key]


class _Announcing:
    """Tells which provider is about to be tried. `send_with_failover` loads a route's credential
    right before sending through it, so this runs before any request of that provider."""

    def __init__(
        self, source: CredentialSource, tried: list[str], before_unsafe: Callable[[str], Awaitable[None]]
    ) -> None:
        self._source = source
        self._tried = tried
        self._before_unsafe = before_unsafe

    async def load(self, credential_id: str, providers: Collection[str]) -> Credential:
        credential = await self._source.load(credential_id, providers)
        self._tried.append(credential.provider)
        if credential.provider not in IDEMPOTENT_PROVIDERS:
            await self._before_unsafe(credential.provider)
        return credential


@dataclass(frozen=True, slots=True)
class RecipientOutcome:
    """What became of one recipient: state sent, failed or unknown."""

    state: str
    provider: str | None
    message_id: str | None = None
    error: str | None = None


async def deliver(
    http: httpx.AsyncClient,
    credentials: CredentialSource,
    route_list: Sequence[EmailRoute],
    message: EmailMessage,
    *,
    idempotency_key: str,
    limiter: RateLimiter | None,
    timeout_s: float,
    max_attempts: int,
    before_unsafe_request: Callable[[str], Awaitable[None]],
    on_failover: Callable[[str, str], None] | None = None,
    sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
) -> RecipientOutcome:
    """Send one recipient's e-mail, failing over like `email.send`; never raises an action error.

    While every provider is unavailable the send is tried again (up to `max_attempts`, backing
    off) only if each provider tried deduplicates repeats; `before_unsafe_request(provider)` is
    awaited before trying one that does not, so its caller can record the risk durably.
    """
    for attempt in range(1, max_attempts + 1):
        tried: list[str] = []
        source = _Announcing(credentials, tried, before_unsafe_request)
        try:
            delivery = await send_with_failover(
                http,
                source,
                route_list,
                message,
                idempotency_key=idempotency_key,
                limiter=limiter,
                timeout_s=timeout_s,
                on_failover=on_failover,
            )
        except PermanentActionError as exc:
            return RecipientOutcome("failed", tried[-1] if tried else None, None, str(exc))
        except RetryableActionError as exc:
            unsafe = [p for p in tried if p not in IDEMPOTENT_PROVIDERS]
            if unsafe:
                reason = f"{exc}; not retried: {unsafe[-1]} may have accepted it and cannot recognise a repeat"
                return RecipientOutcome("unknown", unsafe[-1], None, reason)
            if attempt == max_attempts:
                reason = f"gave up after {attempt} attempt{'s' if attempt > 1 else ''}: {exc}"
                return RecipientOutcome("failed", tried[-1] if tried else None, None, reason)
            await sleep(min(_RETRY_CAP_S, max(exc.retry_after_s or 0.0, 2.0 ** (attempt - 1))))
        else:
            return RecipientOutcome("sent", delivery.provider, delivery.message_id)
    raise AssertionError("unreachable: max_attempts is at least 1")


LEFT_SENDING = (
    "the worker stopped while {provider} had a request for this recipient unanswered; not sent again, "
    "as {provider} cannot recognise a repeat"
)


# --- the end ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Summary:
    """A newsletter's outcome: its own status, the execution's, the result and error shown."""

    status: str
    execution_status: str
    result: dict[str, Any]
    error: str | None


def summarise(
    counts: Mapping[str, int],
    total: int,
    duplicates: int,
    provider_counts: Mapping[str, int],
    errors: Sequence[Mapping[str, Any]],
) -> Summary:
    """sent: everyone; partially_sent: some; failed: nobody; cancelled: stopped with some unsent.

    A newsletter that reached some recipients succeeded as an execution (replaying it would
    send to everyone again); the counts say how many were missed.
    """
    sent, failed, unknown, cancelled = counts["sent"], counts["failed"], counts["unknown"], counts["cancelled"]
    if cancelled:
        status, execution_status = "cancelled", "cancelled"
        error: str | None = f"cancelled by the owner after {sent} of {total} recipients were sent to"
    elif sent == total:
        status, execution_status, error = "sent", "succeeded", None
    elif sent == 0:
        first = errors[0]["error"] if errors else "no details"
        status, execution_status, error = "failed", "failed", f"no recipient was sent to; first error: {first}"
    else:
        status, execution_status, error = "partially_sent", "succeeded", None
    result = {
        "status": status,
        "total": total,
        "sent": sent,
        "failed": failed,
        "unknown": unknown,
        "cancelled": cancelled,
        "duplicates_skipped": duplicates,
        "provider_counts": dict(provider_counts),
        "errors": [dict(e) for e in errors],
    }
    return Summary(status, execution_status, result, error)


async def finalise(conn: asyncpg.Connection, execution_id: UUID, *, cancel: bool) -> Summary | None:
    """Write the newsletter's final status (with `cancel`, unsent recipients become cancelled).

    Returns None if the execution had already finished or is not a newsletter.
    """
    async with conn.transaction():
        if cancel:
            await store.cancel_open(conn, execution_id)
        progress = await store.progress(conn, execution_id)
        if progress is None:
            return None
        counts = await store.state_counts(conn, execution_id)
        providers = await store.provider_counts(conn, execution_id)
        errors = [
            {"index": r["idx"], "email": r["address"], "state": r["state"], "error": r["error"]}
            for r in await store.first_errors(conn, execution_id, _ERRORS_SHOWN)
        ]
        summary = summarise(counts, progress["total"], progress["duplicates_skipped"], providers, errors)
        if not await store.finish(conn, execution_id, summary.execution_status, summary.result, summary.error):
            return None
    return summary


# --- the action ------------------------------------------------------------------------------


async def run(ctx: ActionContext, config: Mapping[str, Any]) -> dict[str, Any]:
    """Newsletters are handed over to their own workflow by the worker, never run inline."""
    raise PermanentActionError(f"{NAME} runs as a workflow of its own; this worker cannot start it")


async def cancel(conn: asyncpg.Connection, execution_id: UUID, reason: str) -> None:
    """Ask a running newsletter to stop between batches (its workflow reads the request).

    One that has not started sending (waiting for send_at, or not handed over) stops at once:
    summarised if it was stored, else simply cancelled with `reason`.
    """
    await execution_store.request_cancel(conn, execution_id)
    not_started = not await store.started(conn, execution_id)
    if not_started and await finalise(conn, execution_id, cancel=True) is None:
        await execution_store.mark_cancelled(conn, execution_id, reason)


async def check_config(
    conn: asyncpg.Connection, owner_id: UUID, config: Mapping[str, Any], credential_id: UUID | None
) -> None:
    """Credentials are the owner's and for the providers named; a literal send_at is readable."""
    await email.check_credentials(conn, owner_id, config, credential_id, NAME)
    literal = config.get("send_at")
    if isinstance(literal, str) and "{{" not in literal and parse_time(literal) is None:
        raise ActionConfigError("action.config.send_at", "expected an RFC 3339 time with a zone")


ACTION = ActionType(
    name=NAME,
    description="Send one e-mail to a list of recipients in paced batches (templated per recipient), "
    "optionally at a given time; cancellable, with progress on the execution.",
    config_schema=CONFIG_SCHEMA,
    run=run,
    credential_providers=email.EMAIL_PROVIDERS,
    check_config=check_config,
    own_workflow=OwnWorkflow(cancel=cancel),
)
