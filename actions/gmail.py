"""`gmail.send-email`: send a message from the workflow's connected Google account.

To, cc, bcc, subject, text and html are templated from the trigger data. With
`reply_in_thread` the message joins the triggering message's thread (Gmail `threadId`, plus
`In-Reply-To`/`References`, which other mail clients use to thread it).

Sent through google-api-python-client's `users.messages.send` with the credential's access
token (the vault refreshes it first when due). The client is synchronous (httplib2), so each
send runs in a worker thread with its own HTTP connection: httplib2 is not thread-safe.

Every message carries `X-Hookyard-Execution: <execution id>`; the Gmail trigger skips mail
carrying it, so a workflow that mails its own mailbox cannot trigger itself forever. Its
`Message-ID` is derived from the execution id, and a retried attempt first looks the message
up by it, so an attempt cut off after Gmail accepted the message does not send it twice.

429 and 5xx retry; 400/401/403 and other 4xx fail with Google's reason (never the token).
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Mapping
from email.message import EmailMessage
from email.utils import getaddresses
from functools import cache
from typing import Any
from uuid import UUID

import asyncpg
import google_auth_httplib2
import httplib2
from google.oauth2.credentials import Credentials
from googleapiclient import discovery_cache
from googleapiclient.discovery import build_from_document
from googleapiclient.errors import HttpError

from actions.base import ActionConfigError, ActionContext, ActionType
from actions.errors import PermanentActionError, RetryableActionError
from actions.http import parse_retry_after
from actions.ratelimit import acquire
from actions.templating import TemplateError, render
from runtime.headers import EXECUTION_HEADER
from schemas.errors import NotFound
from schemas.store.credentials import get_credential

DEFAULT_API_BASE = "https://gmail.googleapis.com/"
SEND_SCOPES = frozenset(
    {
        "https://mail.google.com/",
        "https://www.googleapis.com/auth/gmail.send",
        "https://www.googleapis.com/auth/gmail.compose",
        "https://www.googleapis.com/auth/gmail.modify",
    }
)
_TIMEOUT_S = 30.0
_ADDRESSES = {"type": "string", "minLength": 1, "maxLength": 4000}

CONFIG_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["to", "subject"],
    "additionalProperties": False,
    "anyOf": [{"required": ["text"]}, {"required": ["html"]}],
    "properties": {
        "to": {**_ADDRESSES, "description": "Recipients, comma-separated (templated)."},
        "cc": {**_ADDRESSES, "description": "Cc recipients, comma-separated (templated)."},
        "bcc": {**_ADDRESSES, "description": "Bcc recipients, comma-separated (templated)."},
        "subject": {"type": "string", "maxLength": 998, "description": "Subject (templated)."},
        "text": {"type": "string", "maxLength": 1_000_000, "description": "Plain-text body (templated)."},
        "html": {"type": "string", "maxLength": 1_000_000, "description": "HTML body (templated)."},
        "reply_in_thread": {
            "type": "boolean",
            "default": False,
            "description": "Reply in the thread of the triggering Gmail message (needs a gmail.* trigger).",
        },
    },
}


async def run(ctx: ActionContext, config: Mapping[str, Any]) -> dict[str, Any]:
    """Send the templated message; returns Gmail's message id and thread id."""
    if not ctx.credential_id:
        raise PermanentActionError("gmail.send-email needs a connected Google account as the action's credential")
    if ctx.credentials is None:
        raise PermanentActionError("gmail.send-email: credentials are not available to this worker")
    fields = _render(ctx, config)
    thread_id = _thread(ctx, config, fields)
    credential = await ctx.credentials.load(ctx.credential_id, providers={"google"})
    token = credential.secret.get("access_token")
    if not token:
        raise PermanentActionError("the Google credential holds no access token; reconnect it")
    message_id = f"<hookyard.{ctx.execution_id}@{_domain(credential.account)}>"
    message = _mime(fields, message_id, ctx.execution_id)
    body: dict[str, Any] = {"raw": base64.urlsafe_b64encode(message.as_bytes()).decode()}
    if thread_id:
        body["threadId"] = thread_id
    await acquire(ctx.limiter, "google", credential.id)
    api_base = ctx.api_bases.get("gmail") or DEFAULT_API_BASE
    # httplib2 cannot connect through the egress backend, so the base is checked here. It is an
    # operator setting (never owner input), so the resolution httplib2 repeats is not a risk.
    await ctx.egress.check_url(api_base)
    sent = await asyncio.to_thread(_send, api_base, token, body, message_id if ctx.attempt > 1 else None)
    return {"message_id": sent.get("id"), "thread_id": sent.get("threadId"), "rfc822_message_id": message_id}


def _render(ctx: ActionContext, config: Mapping[str, Any]) -> dict[str, str]:
    fields: dict[str, str] = {}
    budget = ctx.render_budget()
    for name in ("to", "cc", "bcc", "subject", "text", "html"):
        if config.get(name) is None:
            continue
        try:
            value = render(config[name], ctx.template_context, field=name, budget=budget)
        except TemplateError as exc:
            raise PermanentActionError(f"template error: {exc}") from exc
        fields[name] = "" if value is None else str(value)
    for name in ("to", "cc", "bcc", "subject"):
        # A header must stay one header: templated values must not smuggle in others.
        if "\r" in fields.get(name, "") or "\n" in fields.get(name, ""):
            raise PermanentActionError(f"{name}: line breaks are not allowed after templating")
    if not [address for _, address in getaddresses([fields.get("to", "")]) if "@" in address]:
        raise PermanentActionError("to: no recipient address after templating")
    if not fields.get("text") and not fields.get("html"):
        raise PermanentActionError("text and html are both empty after templating")
    return fields


def _thread(ctx: ActionContext, config: Mapping[str, Any], fields: dict[str, str]) -> str | None:
    if not config.get("reply_in_thread"):
        return None
    trigger = ctx.template_context.get("trigger")
    trigger = trigger if isinstance(trigger, Mapping) else {}
    thread_id = trigger.get("thread_id")
    if not isinstance(thread_id, str) or not thread_id:
        raise PermanentActionError("reply_in_thread needs a Gmail trigger (its data has no thread_id)")
    parent = trigger.get("message_id")
    if isinstance(parent, str) and parent and "\n" not in parent and "\r" not in parent:
        references = trigger.get("references")
        chain = references if isinstance(references, str) and "\n" not in references else ""
        fields["in_reply_to"] = parent
        fields["references"] = f"{chain} {parent}".strip()
    return thread_id


def _mime(fields: Mapping[str, str], message_id: str, execution_id: str) -> EmailMessage:
    message = EmailMessage()
    try:
        message["To"] = fields["to"]
        for name, header in (("cc", "Cc"), ("bcc", "Bcc")):
            if fields.get(name):
                message[header] = fields[name]
        message["Subject"] = fields.get("subject", "")
        message["Message-ID"] = message_id
        message[EXECUTION_HEADER] = execution_id
        if fields.get("in_reply_to"):
            message["In-Reply-To"] = fields["in_reply_to"]
            message["References"] = fields["references"]
        if fields.get("text"):
            message.set_content(fields["text"])
            if fields.get("html"):
                message.add_alternative(fields["html"], subtype="html")
        else:
            message.set_content(fields["html"], subtype="html")
    except (ValueError, TypeError) as exc:
        raise PermanentActionError(f"cannot build the message: {exc}") from None
    return message


def _domain(account: str | None) -> str:
    _, _, domain = (account or "").rpartition("@")
    return domain if domain and domain.replace(".", "").replace("-", "").isalnum() else "hookyard.local"


@cache
def _discovery() -> str:
    # Bundled with the client: building the service makes no network call.
    document: str = discovery_cache.get_static_doc("gmail", "v1")
    return document


def _send(api_base: str, token: str, body: dict[str, Any], message_id: str | None) -> dict[str, Any]:
    """The blocking send, in a worker thread with its own connection (httplib2 is not thread-safe)."""
    # No refresh on 401 here: the vault refreshed already, so a 401 means the grant is gone.
    http = google_auth_httplib2.AuthorizedHttp(
        Credentials(token=token),  # type: ignore[no-untyped-call]
        http=httplib2.Http(timeout=_TIMEOUT_S),
        refresh_status_codes=(),
    )
    try:
        service = build_from_document(_discovery(), http=http, client_options={"api_endpoint": api_base})
        messages = service.users().messages()
        if message_id is not None:
            # A retry: an earlier attempt may have been cut off after Gmail took the message.
            found = messages.list(userId="me", q=f"rfc822msgid:{message_id}", maxResults=1).execute()
            if found.get("messages"):
                return {"id": found["messages"][0].get("id"), "threadId": found["messages"][0].get("threadId")}
        result: dict[str, Any] = messages.send(userId="me", body=body).execute()
        return result
    except HttpError as exc:
        raise _http_error(exc) from None
    except (TimeoutError, httplib2.HttpLib2Error, OSError) as exc:
        raise RetryableActionError(f"could not reach Gmail: {type(exc).__name__}") from None
    finally:
        http.close()


def _http_error(exc: HttpError) -> Exception:
    status = int(exc.resp.status)
    reason = (exc.reason or "")[:300] if isinstance(exc.reason, str) else ""
    detail = f"Gmail answered {status}" + (f": {reason}" if reason else "")
    if status == 429 or status >= 500:
        return RetryableActionError(detail, retry_after_s=parse_retry_after(exc.resp.get("retry-after")))
    if status == 401:
        return PermanentActionError(f"{detail} (the Google account's grant is no longer valid; reconnect it)")
    if status == 403:
        return PermanentActionError(f"{detail} (the Google account may lack the gmail.send scope; reconnect it)")
    return PermanentActionError(detail)


async def check_config(
    conn: asyncpg.Connection, owner_id: UUID, config: Mapping[str, Any], credential_id: UUID | None
) -> None:
    """The action's credential must be one of the owner's Google accounts allowed to send mail."""
    field = "action.credential_id"
    if credential_id is None:
        raise ActionConfigError(field, "gmail.send-email needs a connected Google account")
    try:
        row = await get_credential(conn, owner_id, credential_id)
    except NotFound:
        raise ActionConfigError(field, "needs a connected Google account of yours") from None
    if row.provider != "google":
        raise ActionConfigError(field, "needs a connected Google account of yours")
    if not SEND_SCOPES & set(row.scopes):
        raise ActionConfigError(field, "the Google account was connected without permission to send mail")


ACTION = ActionType(
    name="gmail.send-email",
    description="Send an email from a connected Gmail account (recipients, subject and body templated; "
    "optionally as a reply in the triggering thread).",
    config_schema=CONFIG_SCHEMA,
    run=run,
    credential_providers=("google",),
    check_config=check_config,
)
