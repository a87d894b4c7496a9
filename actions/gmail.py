"""`gmail.send-email`: send a message from the workflow's connected Google account.

To, cc, bcc, subject, text and html are templated from the trigger data. With
`reply_in_thread` the message joins the triggering message's thread (Gmail `threadId`, plus
`In-Reply-To`/`References`, which other mail clients use to thread it).

Sent with `users.messages.send` through hookyard's one Gmail client (actions/gmail_client.py,
async over the worker's egress-guarded HTTP client) and the credential's access token, under
OAuth's 401 rule: a refused token is refreshed once and the send retried; a dead grant marks
the credential `needs_reconnect` and fails the execution for good, naming the reason.

Every message carries `X-Hookyard-Execution: <execution id>`; the Gmail trigger skips mail
carrying it, so a workflow that mails its own mailbox cannot trigger itself forever. Its
`Message-ID` is derived from the execution id, and a retried attempt first looks the message
up by it, so an attempt cut off after Gmail accepted the message does not send it twice.

429 and 5xx retry; 400/403 and other 4xx fail with Google's reason (never the token).
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from email.message import EmailMessage
from email.utils import getaddresses
from typing import Any
from uuid import UUID

import asyncpg

from actions.base import ActionConfigError, ActionContext, ActionType, Credential, OAuthCredentialSource
from actions.errors import PermanentActionError, RetryableActionError
from actions.gmail_client import DEFAULT_API_BASE, GmailClient, GmailRefused, GmailUnavailable
from actions.ratelimit import acquire
from actions.templating import TemplateError, render
from runtime.headers import EXECUTION_HEADER
from schemas.errors import NotFound
from schemas.store.credentials import get_credential

SEND_SCOPES = frozenset(
    {
        "https://mail.google.com/",
        "https://www.googleapis.com/auth/gmail.send",
        "https://www.googleapis.com/auth/gmail.compose",
        "https://www.googleapis.com/auth/gmail.modify",
    }
)
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
    credentials = ctx.credentials
    if not isinstance(credentials, OAuthCredentialSource):
        raise PermanentActionError("gmail.send-email: credentials are not available to this worker")
    fields = _render(ctx, config)
    thread_id = _thread(ctx, config, fields)
    credential = await credentials.load(ctx.credential_id, providers={"google"})
    message_id = f"<hookyard.{ctx.execution_id}@{_domain(credential.account)}>"
    message = _mime(fields, message_id, ctx.execution_id)
    raw = base64.urlsafe_b64encode(message.as_bytes()).decode()
    await acquire(ctx.limiter, "google", credential.id)
    api_base = ctx.api_bases.get("gmail") or DEFAULT_API_BASE
    # A retry first looks for the message: an earlier attempt may have been cut off after
    # Gmail took it. (A send refused with 401 was not taken, so the 401 rule may repeat it.)
    lookup = message_id if ctx.attempt > 1 else None

    async def send(current: Credential) -> dict[str, Any]:
        token = current.secret.get("access_token")
        if not token:
            raise PermanentActionError("the Google credential holds no access token; reconnect it")
        client = GmailClient(ctx.http, api_base, token)
        if lookup is not None and (found := await client.find(lookup)) is not None:
            return found
        return await client.send(raw, thread_id)

    try:
        sent = await credentials.call(ctx.credential_id, {"google"}, send)
    except GmailUnavailable as exc:
        raise RetryableActionError(str(exc), retry_after_s=exc.retry_after_s) from None
    except GmailRefused as exc:
        hint = " (the Google account may lack the gmail.send scope; reconnect it)" if exc.status == 403 else ""
        raise PermanentActionError(f"{exc}{hint}") from None
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
