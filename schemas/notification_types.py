"""Every notification event type, by name, with the JSON Schema of its `data` and its version.

A new event type is one `EventType` plus one line in `EVENT_TYPES`. The catalog
(`GET /api/catalog`) lists them; `schemas.store.notifications.emit` refuses names not here.
Each delivery is an envelope `{"id", "type", "version", "timestamp", "data"}` (ENVELOPE_SCHEMA);
`version` changes only when `data` changes incompatibly.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from schemas import notification_data as data


@dataclass(frozen=True, slots=True)
class EventType:
    """A kind of notification: its name, schema version, description and `data` schema."""

    name: str
    version: int
    description: str
    data_schema: Mapping[str, Any] = field(default_factory=dict)


class UnknownEventType(LookupError):
    """No notification event type has this name."""


_UUID = {"type": "string", "format": "uuid"}
_NULLABLE_UUID = {"type": ["string", "null"], "format": "uuid"}

# `links` hold paths of the owners' API (resolved against HOOKYARD_PUBLIC_URL when sent) or
# absolute URLs.
_LINKS = {"type": "object", "additionalProperties": {"type": "string"}}

_EXECUTION_DATA: Mapping[str, Any] = {
    "type": "object",
    "required": ["execution", "workflow", "links"],
    "properties": {
        "execution": {
            "type": "object",
            "required": ["id", "status", "attempts"],
            "properties": {
                "id": _UUID,
                "status": {"enum": ["succeeded", "failed", "cancelled"]},
                "attempts": {"type": "integer", "minimum": 0},
                "error": {"type": ["string", "null"], "maxLength": 2000},
                "event_id": _NULLABLE_UUID,
                "replay_of": _NULLABLE_UUID,
                "finished_at": {"type": ["string", "null"], "format": "date-time"},
            },
        },
        "workflow": {
            "type": "object",
            "required": ["id"],
            "properties": {"id": _UUID, "name": {"type": "string"}, "action_type": {"type": "string"}},
        },
        "links": _LINKS,
    },
}


def _execution(status: str, what: str) -> EventType:
    return EventType(f"execution.{status}", 1, f"An execution {what}.", _EXECUTION_DATA)


EXECUTION_SUCCEEDED = _execution("succeeded", "succeeded")
EXECUTION_FAILED = _execution("failed", "failed for good (its retries used up, or a permanent error)")
EXECUTION_CANCELLED = _execution("cancelled", "was cancelled (by its owner, or its workflow was deactivated)")
NEWSLETTER_PROGRESS = EventType(
    "newsletter.progress", 1, "A newsletter is sending (at most one per 10 s each).", data.NEWSLETTER_PROGRESS
)
NEWSLETTER_COMPLETED = EventType(
    "newsletter.completed",
    1,
    "A newsletter finished: sent, partially_sent, failed or cancelled.",
    data.NEWSLETTER_COMPLETED,
)
CREDENTIAL_NEEDS_RECONNECT = EventType(
    "credential.needs_reconnect",
    1,
    "A credential's grant is gone; carries a fresh single-use connect link for the account.",
    data.CREDENTIAL_NEEDS_RECONNECT,
)
TRIGGER_SYNC_FAILED = EventType(
    "trigger.sync_failed", 1, "A trigger could not be set up (once per error).", data.TRIGGER_SYNC_FAILED
)
GMAIL_WATCH_RENEWED_FAILED = EventType(
    "gmail.watch_renewed_failed",
    1,
    "Renewing a Gmail watch failed (once until one succeeds).",
    data.GMAIL_WATCH_RENEWED_FAILED,
)
GMAIL_WATCH_EXPIRING = EventType(
    "gmail.watch_expiring", 1, "A Gmail watch expires within 5 days: renewals keep failing.", data.GMAIL_WATCH_EXPIRING
)

EVENT_TYPES: Mapping[str, EventType] = {
    t.name: t
    for t in (
        EXECUTION_SUCCEEDED,
        EXECUTION_FAILED,
        EXECUTION_CANCELLED,
        NEWSLETTER_PROGRESS,
        NEWSLETTER_COMPLETED,
        CREDENTIAL_NEEDS_RECONNECT,
        TRIGGER_SYNC_FAILED,
        GMAIL_WATCH_RENEWED_FAILED,
        GMAIL_WATCH_EXPIRING,
    )
}

ENVELOPE_SCHEMA: Mapping[str, Any] = {
    "type": "object",
    "required": ["id", "type", "version", "timestamp", "data"],
    "properties": {
        "id": {**_UUID, "description": "The notification id; also the `webhook-id` header, stable across retries."},
        "type": {"type": "string"},
        "version": {"type": "integer"},
        "timestamp": {"type": "string", "format": "date-time"},
        "data": {"type": "object"},
    },
}


def event_type(name: str) -> EventType:
    """The event type called `name`; `UnknownEventType` if there is none."""
    try:
        return EVENT_TYPES[name]
    except KeyError:
        raise UnknownEventType(f"unknown notification event type {name!r}") from None
