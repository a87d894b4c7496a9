"""The `data` JSON Schemas of the notification event types other than `execution.*`.

Registered as event types in `schemas.notification_types`; built and emitted by
`schemas.store.notification_events`, in the transaction of the state change each reports.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

_UUID = {"type": "string", "format": "uuid"}
_COUNT = {"type": "integer", "minimum": 0}
_TIME = {"type": "string", "format": "date-time"}
_NULLABLE_TIME = {"type": ["string", "null"], "format": "date-time"}
_ERROR = {"type": "string", "maxLength": 500}
_LINKS = {"type": "object", "additionalProperties": {"type": "string"}}

_WORKFLOW = {
    "type": "object",
    "required": ["id", "name"],
    "properties": {"id": _UUID, "name": {"type": "string"}},
}

_NEWSLETTER = {
    "type": "object",
    "required": ["execution_id", "total", "sent", "failed"],
    "properties": {
        "execution_id": _UUID,
        "total": _COUNT,
        "sent": _COUNT,
        "failed": {**_COUNT, "description": "Recipients not sent to (including those whose send is unknown)."},
        "unknown": _COUNT,
        "cancelled": _COUNT,
        "remaining": _COUNT,
    },
}


def _object(required: list[str], properties: Mapping[str, Any]) -> Mapping[str, Any]:
    return {"type": "object", "required": required, "properties": dict(properties)}


NEWSLETTER_PROGRESS: Mapping[str, Any] = _object(
    ["newsletter", "workflow", "links"],
    {"newsletter": _NEWSLETTER, "workflow": _WORKFLOW, "links": _LINKS},
)

NEWSLETTER_COMPLETED: Mapping[str, Any] = _object(
    ["status", "newsletter", "workflow", "links"],
    {
        "status": {"enum": ["sent", "partially_sent", "failed", "cancelled"]},
        "newsletter": _NEWSLETTER,
        "workflow": _WORKFLOW,
        "links": _LINKS,
    },
)

_CREDENTIAL = _object(
    ["id", "provider", "account"],
    {"id": _UUID, "provider": {"type": "string"}, "account": {"type": ["string", "null"]}},
)

CREDENTIAL_NEEDS_RECONNECT: Mapping[str, Any] = _object(
    ["reason", "detail", "credential", "paused_workflows", "links"],
    {
        "reason": {"type": "string", "description": "`revoked` (the grant is gone) or `scopes_missing`."},
        "detail": _ERROR,
        "credential": _CREDENTIAL,
        "paused_workflows": {"type": "array", "items": _UUID},
        # OAuth2 credentials only: API keys are replaced through the API, not a link.
        "connect_link": _object(
            ["id", "expires_at"],
            {
                "id": _UUID,
                "expires_at": _TIME,
                "url": {
                    "type": "string",
                    "description": "Added when the notification is sent: a signed, single-use link that "
                    "reconnects the account. A bearer secret: forward it only to the account's holder.",
                },
            },
        ),
        "links": _LINKS,
    },
)

TRIGGER_SYNC_FAILED: Mapping[str, Any] = _object(
    ["workflow", "trigger_type", "error", "links"],
    {
        "workflow": _WORKFLOW,
        "trigger_type": {"type": "string"},
        "error": _ERROR,
        "attempts": _COUNT,
        "links": _LINKS,
    },
)

_MAILBOX = _object(
    ["credential_id", "email"],
    {"credential_id": _UUID, "email": {"type": ["string", "null"]}},
)

GMAIL_WATCH_RENEWED_FAILED: Mapping[str, Any] = _object(
    ["mailbox", "error", "expires_at", "links"],
    {"mailbox": _MAILBOX, "error": _ERROR, "expires_at": _NULLABLE_TIME, "links": _LINKS},
)

GMAIL_WATCH_EXPIRING: Mapping[str, Any] = _object(
    ["mailbox", "expires_at", "links"],
    {"mailbox": _MAILBOX, "expires_at": _TIME, "last_error": {"type": ["string", "null"]}, "links": _LINKS},
)
