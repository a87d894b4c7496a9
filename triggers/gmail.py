"""`gmail.receive-email`: a new message arrived in a connected Gmail mailbox.

Each connected Google account read by some workflow has one mailbox row and one long-running
mailbox workflow (`gmail-mailbox-<credential id>`, worker/gmail/). Pub/Sub pushes wake it;
it reads `users.history` from its stored cursor and stores one inbox event per new message
(source type `gmail`, source id = the credential id, deduplicated on the Gmail message id),
whose body is this trigger's data. From there events are routed, filtered, listed and
replayable like any other. This module only describes and matches: the mailbox workflow, its
contract and the sync hook that keeps the mailbox watched live in worker/gmail/.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from email.message import Message
from typing import Any
from uuid import UUID

import asyncpg
import orjson

from schemas import jsonlimits
from schemas.errors import NotFound
from schemas.store.credentials import get_credential
from triggers.base import (
    InboxEvent,
    ManualRun,
    TriggerConfigError,
    TriggerType,
    check_filter,
    match_filter,
)
from triggers.filters import MAX_TRACE_STEPS, FilterOutcome, TraceStep, filter_schema, shown_value

NAME = "gmail.receive-email"
SOURCE_TYPE = "gmail"
PUSH_SOURCE_TYPE = "gmail.push"

GMAIL = "https://www.googleapis.com/auth/"
# Reading full messages needs one of these (gmail.metadata cannot fetch bodies).
READ_SCOPES = frozenset({"https://mail.google.com/", GMAIL + "gmail.modify", GMAIL + "gmail.readonly"})

_BODY_CHARS = 200_000
_HEADER_CHARS = 16_384
_MAX_PARTS = 200

_LABEL = {"type": "string", "minLength": 1, "maxLength": 200, "pattern": r"^[^\s,]+$"}
_TEXT = {"type": "string", "minLength": 1, "maxLength": 500}
CONFIG_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["mailbox"],
    "additionalProperties": False,
    "properties": {
        "mailbox": {
            "type": "string",
            "format": "uuid",
            "description": "Id of the connected Google credential whose mailbox is read.",
        },
        "label_ids": {
            "type": "array",
            "items": _LABEL,
            "minItems": 1,
            "maxItems": 20,
            "uniqueItems": True,
            "default": ["INBOX"],
            "description": "Fire for messages carrying any of these Gmail label ids (INBOX, UNREAD, Label_123...).",
        },
        "from": {**_TEXT, "description": "Only messages whose From header contains this (any case)."},
        "to": {**_TEXT, "description": "Only messages whose To or Cc header contains this (any case)."},
        "subject": {**_TEXT, "description": "Only messages whose subject contains this (any case)."},
        "text": {**_TEXT, "description": "Only messages whose snippet or text body contains this (any case)."},
        "has_attachment": {"type": "boolean", "description": "Only messages with (true) or without (false) files."},
        "filter": {**filter_schema(), "description": "Optional condition over the trigger data."},
    },
}


# --- messages -> trigger data -----------------------------------------------------------


def message_data(message: Mapping[str, Any], *, mailbox: str, account: str | None) -> dict[str, Any]:
    """The trigger data of one Gmail message (`users.messages.get`, format full).

    Attachments are described, never downloaded; bodies are cut at 200,000 characters.
    """
    payload = _object(message.get("payload"))
    headers = _headers(payload)
    text, html, attachments = _bodies(payload)
    internal = message.get("internalDate")
    received_at = None
    if isinstance(internal, str) and internal.isdigit():
        received_at = datetime.fromtimestamp(int(internal) / 1000, UTC).isoformat()
    labels = message.get("labelIds")
    data: dict[str, Any] = {
        "id": _text(message.get("id")),
        "thread_id": _text(message.get("threadId")),
        "history_id": _text(message.get("historyId")),
        "mailbox": mailbox,
        "account": account,
        "from": headers.get("from", ""),
        "to": headers.get("to", ""),
        "cc": headers.get("cc", ""),
        "reply_to": headers.get("reply-to", ""),
        "subject": headers.get("subject", ""),
        "date": headers.get("date", ""),
        "received_at": received_at,
        "message_id": headers.get("message-id", ""),
        "in_reply_to": headers.get("in-reply-to", ""),
        "references": headers.get("references", ""),
        "snippet": _text(message.get("snippet")) or "",
        "text": (text or "")[:_BODY_CHARS],
        "html": (html or "")[:_BODY_CHARS],
        "truncated": len(text or "") > _BODY_CHARS or len(html or "") > _BODY_CHARS,
        "labels": [str(label) for label in labels] if isinstance(labels, list) else [],
        "attachments": attachments,
        "has_attachment": bool(attachments),
        "headers": _bounded(headers),
    }
    return data


def _text(value: object) -> str | None:
    """Ids come as strings; anything else (never sent by Gmail) is shown as text or dropped."""
    if isinstance(value, str):
        return value
    return str(value) if isinstance(value, int) and not isinstance(value, bool) else None


def _object(value: object) -> Mapping[str, Any]:
    return value if isinstance(value, dict) else {}


def _headers(payload: Mapping[str, Any]) -> dict[str, str]:
    found: dict[str, str] = {}
    raw = payload.get("headers")
    for header in raw if isinstance(raw, list) else []:
        if isinstance(header, dict) and isinstance(header.get("name"), str) and isinstance(header.get("value"), str):
            found.setdefault(header["name"].lower(), header["value"])
    return found


def _bounded(headers: dict[str, str]) -> dict[str, str]:
    kept: dict[str, str] = {}
    size = 0
    for name, value in headers.items():
        size += len(name) + len(value)
        if size > _HEADER_CHARS:
            break
        kept[name] = value
    return kept


def _parts(payload: Mapping[str, Any]) -> Iterator[Mapping[str, Any]]:
    """Every MIME part, depth first, bounded (a hostile message may nest without end)."""
    stack = [payload]
    seen = 0
    while stack and seen < _MAX_PARTS:
        part = stack.pop()
        seen += 1
        yield part
        children = part.get("parts")
        if isinstance(children, list):
            stack.extend(reversed([c for c in children if isinstance(c, dict)]))


def _bodies(payload: Mapping[str, Any]) -> tuple[str | None, str | None, list[dict[str, Any]]]:
    text = html = None
    attachments: list[dict[str, Any]] = []
    for part in _parts(payload):
        mime = str(part.get("mimeType") or "").lower()
        body = _object(part.get("body"))
        headers = _headers(part)
        filename = part.get("filename") or ""
        disposition = headers.get("content-disposition", "").lower()
        if filename or (body.get("attachmentId") and disposition.startswith("attachment")):
            attachments.append(
                {
                    "filename": str(filename),
                    "mime_type": mime,
                    "size": body.get("size")
                    if isinstance(body.get("size"), int) and 0 <= body["size"] < 2**53
                    else None,
                    "attachment_id": _text(body.get("attachmentId")),
                    "part_id": _text(part.get("partId")),
                }
            )
        elif mime == "text/plain" and text is None:
            text = _decode(body.get("data"), headers.get("content-type", ""))
        elif mime == "text/html" and html is None:
            html = _decode(body.get("data"), headers.get("content-type", ""))
    return text, html, attachments


def _decode(data: object, content_type: str) -> str | None:
    if not isinstance(data, str):
        return None
    try:
        raw = base64.urlsafe_b64decode(data + "=" * (-len(data) % 4))
    except (binascii.Error, ValueError):
        return None
    message = Message()
    message["content-type"] = content_type or "text/plain"
    charset = message.get_content_charset() or "utf-8"
    try:
        return raw.decode(charset, "replace")
    except (LookupError, UnicodeError, ValueError):
        # An unknown charset, or one (idna, ...) that fails even in "replace" mode.
        return raw.decode("utf-8", "replace")


# --- the trigger ------------------------------------------------------------------------


def _trigger_data(event: InboxEvent) -> dict[str, Any]:
    try:
        data = jsonlimits.loads(event.body, event.max_json_depth)
    except orjson.JSONDecodeError:
        data = None
    if not isinstance(data, dict):
        data = {"body": event.body.decode("utf-8", "replace")}
    return {**data, "event_id": str(event.id), "mailbox": event.source_id}


_SPACES = re.compile(r"\s+")


def _contains(haystack: object, needle: str) -> bool:
    return isinstance(haystack, str) and needle.casefold() in _SPACES.sub(" ", haystack).casefold()


def _match(config: Mapping[str, Any], data: Mapping[str, Any]) -> FilterOutcome:
    """The built-in checks (labels, from, to, subject, text, attachments), then the filter.

    Each check evaluated is a trace step located at its config field, so a match explains
    which of them passed, not only the optional `filter`.
    """
    steps: list[TraceStep] = []
    reasons: list[str] = []
    wanted = list(config.get("label_ids") or ["INBOX"])
    given = data.get("labels")
    labels = sorted({str(label) for label in given if isinstance(label, str)}) if isinstance(given, list) else []
    shared = sorted(set(wanted) & set(labels))
    steps.append(_step("label_ids", "labels", "includes_any", wanted, labels, bool(shared)))
    if not shared:
        return FilterOutcome(False, f"labels {labels[:10]} include none of {wanted}"[:200], tuple(steps))
    reasons.append(f"labels include {shared[0]}")
    checks = {
        "from": ("from", [data.get("from")]),
        "to": ("to", [data.get("to"), data.get("cc")]),
        "subject": ("subject", [data.get("subject")]),
        "text": ("text", [data.get("snippet"), data.get("text")]),
    }
    for field, (path, haystacks) in checks.items():
        needle = config.get(field)
        if not needle:
            continue
        found = any(_contains(h, needle) for h in haystacks)
        steps.append(_step(field, path, "contains", needle, haystacks[0], found))
        if not found:
            return FilterOutcome(False, f"{field} does not contain {needle!r}"[:200], tuple(steps))
        reasons.append(f"{field} contains {needle!r}")
    if "has_attachment" in config:
        has = bool(data.get("attachments"))
        steps.append(
            _step(
                "has_attachment",
                "has_attachment",
                "equals",
                config["has_attachment"],
                has,
                has == config["has_attachment"],
            )
        )
        if has != config["has_attachment"]:
            return FilterOutcome(False, "has attachments" if has else "has no attachments", tuple(steps))
        reasons.append("has attachments" if has else "has no attachments")
    outcome = match_filter(config, data)
    if config.get("filter") is not None or not reasons:
        reasons.append(outcome.reason)
    room = max(MAX_TRACE_STEPS - len(steps), 0)
    return FilterOutcome(
        outcome.matched,
        "; ".join(reasons)[:200],
        (*steps, *outcome.trace[:room]),
        outcome.truncated or len(outcome.trace) > room,
    )


def _step(at: str, path: str, op: str, expected: object, seen: object, matched: bool) -> TraceStep:
    return TraceStep(at, "condition", matched, path=path, op=op, expected=shown_value(expected), seen=shown_value(seen))


async def _check(conn: asyncpg.Connection, owner_id: UUID, config: Mapping[str, Any]) -> None:
    check_filter(config)
    field = "trigger.config.mailbox"
    try:
        row = await get_credential(conn, owner_id, UUID(str(config["mailbox"])))
    except NotFound:
        raise TriggerConfigError(field, "no such credential") from None
    if row.provider != "google" or row.kind != "oauth2":
        raise TriggerConfigError(field, f"credential is for {row.provider}, not a connected Google account")
    if not READ_SCOPES & set(row.scopes):
        raise TriggerConfigError(field, "the Google account was connected without Gmail read access; reconnect it")
    if row.status != "active":
        raise TriggerConfigError(field, f"the Google account is {row.status}; reconnect it")


def _manual(run: ManualRun) -> dict[str, Any]:
    # Every field a real message has, empty, overlaid with the fields given.
    empty = message_data({}, mailbox=run.source_id, account=None)
    return {**empty, **run.given, "event_id": None, "mailbox": run.source_id}


TRIGGER = TriggerType(
    name=NAME,
    source_type=SOURCE_TYPE,
    description="A new message arrived in a connected Gmail mailbox (by label, sender, subject, text); "
    "optionally filtered.",
    config_schema=CONFIG_SCHEMA,
    # Normalised: events carry the canonical lower-case form of the credential id.
    routing_key=lambda config: str(UUID(str(config["mailbox"]))),
    trigger_data=_trigger_data,
    match=_match,
    check_config=_check,
    manual_data=_manual,
    manual_doc="The request body gives message fields (from, to, subject, text, labels, thread_id, ...); the rest "
    "are empty, as in a message without them: trigger data is a message's, with `event_id` null.",
    internal_source=PUSH_SOURCE_TYPE,
)
