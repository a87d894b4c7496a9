"""Notifications: written in the transaction of the state change they report, delivered to
the owner's matching subscriptions as executions of each subscription's internal workflow
(docs/architecture.md, "Owner notifications")."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

import asyncpg
import orjson

from schemas.db import in_savepoint
from schemas.notification_types import EXECUTION_CANCELLED, EXECUTION_FAILED, EXECUTION_SUCCEEDED, event_type
from schemas.sanitize import strip_nul
from schemas.store.events import EVENTS_CHANNEL

log = logging.getLogger(__name__)

# Execution errors carried by a notification are cut to this many characters.
MAX_ERROR_CHARS = 2000

_EXECUTION_TYPES = {
    "succeeded": EXECUTION_SUCCEEDED.name,
    "failed": EXECUTION_FAILED.name,
    "cancelled": EXECUTION_CANCELLED.name,
}


# Whether an owner (`{owner}`: a column) has an active subscription: a statement ending
# executions may return it as `subscribed`, sparing `notify_executions_ended` its probe.
SUBSCRIBED = "EXISTS (SELECT 1 FROM subscriptions s WHERE s.owner_id = {owner} AND s.active AND s.deleted_at IS NULL)"


@dataclass(frozen=True, slots=True)
class Notice:
    """One notification to write: what happened, to whose subscriptions, for which filters."""

    owner_id: UUID
    event_type: str
    data: Mapping[str, Any] = field(default_factory=dict)
    workflow_id: UUID | None = None
    action_type: str | None = None
    subject_id: str | None = None


async def emit(
    conn: asyncpg.Connection,
    *,
    owner_id: UUID,
    event_type: str,
    data: Mapping[str, Any],
    workflow_id: UUID | None = None,
    action_type: str | None = None,
    subject_id: str | None = None,
) -> None:
    """Write a notification and queue its delivery to each matching subscription of the owner.

    Call inside the transaction of the state change it reports: the notification is durable
    iff that change is. `workflow_id` and `action_type` are what subscriptions' filters match;
    `subject_id` names what the notification is about (an execution, a credential). Raises
    `schemas.notification_types.UnknownEventType` for a type not in the registry.
    """
    notice = Notice(owner_id, event_type, data, workflow_id, action_type, subject_id)
    await emit_many(conn, [notice])


# One statement: the notifications some active subscription wants, and one queued delivery per
# (notification, subscription), in notice order (each subscription's deliveries run FIFO).
_EMIT = (
    "WITH n AS MATERIALIZED (SELECT gen_random_uuid() AS id, u.*, u.data_text::jsonb AS data "
    " FROM unnest($1::uuid[], $2::text[], $3::int[], $4::text[], $5::uuid[], $6::text[], $7::text[]) WITH ORDINALITY "
    " AS u(owner_id, event_type, version, data_text, workflow_id, action_type, subject_id, ord)), "
    "m AS MATERIALIZED (SELECT n.*, s.workflow_id AS delivery_workflow, s.seq AS sub_seq FROM n "
    " JOIN subscriptions s ON s.owner_id = n.owner_id AND s.active AND s.deleted_at IS NULL "
    " AND n.event_type = ANY(s.event_types) "
    " AND (s.workflow_ids IS NULL OR n.workflow_id = ANY(s.workflow_ids)) "
    " AND (s.action_types IS NULL OR n.action_type = ANY(s.action_types))), "
    "saved AS (INSERT INTO notifications (id, owner_id, event_type, version, data, workflow_id, action_type, "
    " subject_id) SELECT DISTINCT ON (id) id, owner_id, event_type, version, data, workflow_id, action_type, "
    " subject_id FROM m RETURNING 1), "
    "queued AS (INSERT INTO executions (owner_id, workflow_id, trigger_data) "
    " SELECT owner_id, delivery_workflow, jsonb_build_object('id', id, 'type', event_type, 'version', version, "
    " 'timestamp', now(), 'data', data) FROM m ORDER BY ord, sub_seq RETURNING 1) "
    "SELECT (SELECT count(*) FROM queued) AS deliveries, (SELECT count(*) FROM saved) AS notifications"
)


async def emit_many(conn: asyncpg.Connection, notices: Sequence[Notice]) -> int:
    """`emit` for several notices in one statement; returns the deliveries queued."""
    if not notices:
        return 0
    versions = [event_type(n.event_type).version for n in notices]
    # Serialised here: ids of any kind become strings, NULs (refused by jsonb) are replaced.
    data = [orjson.dumps(strip_nul(dict(n.data)), default=str).decode() for n in notices]
    row = await conn.fetchrow(
        _EMIT,
        [n.owner_id for n in notices],
        [n.event_type for n in notices],
        versions,
        data,
        [n.workflow_id for n in notices],
        [n.action_type for n in notices],
        [n.subject_id for n in notices],
    )
    queued = int(row["deliveries"]) if row is not None else 0
    if queued:
        # Wakes the dispatcher, whose hand-over picks up every queued execution.
        await conn.execute("SELECT pg_notify($1, '')", EVENTS_CHANNEL)
    return queued


async def notify_executions_ended(conn: asyncpg.Connection, rows: Sequence[asyncpg.Record]) -> int:
    """Emit `execution.<status>` for executions that just ended (rows as `terminal.RETURNING`).

    Costs one probe when none of the owners subscribes to execution events. Executions of
    internal workflows (deliveries themselves) are never reported: no notification loops.
    """
    if all(r.get("subscribed", True) is False for r in rows):
        return 0  # the statement that ended them found no active subscription of their owners
    owners = list({r["owner_id"] for r in rows})
    wanted = await conn.fetch(
        "SELECT DISTINCT owner_id FROM subscriptions WHERE owner_id = ANY($1::uuid[]) AND active "
        "AND deleted_at IS NULL AND event_types && $2::text[]",
        owners,
        list(_EXECUTION_TYPES.values()),
    )
    if not wanted:
        return 0
    subscribed = {r["owner_id"] for r in wanted}
    rows = [r for r in rows if r["owner_id"] in subscribed and r["status"] in _EXECUTION_TYPES]
    workflows = await conn.fetch(
        "SELECT id, name, action_type FROM workflows WHERE id = ANY($1::uuid[]) AND NOT internal",
        list({r["workflow_id"] for r in rows}),
    )
    by_id = {w["id"]: w for w in workflows}
    notices = [_execution_notice(r, by_id[r["workflow_id"]]) for r in rows if r["workflow_id"] in by_id]
    # A notification that cannot be written (a defect) must not undo the outcomes it reports.
    return await in_savepoint(
        conn, lambda: emit_many(conn, notices), 0, f"notifications of {len(notices)} ended executions"
    )


def _execution_notice(row: asyncpg.Record, workflow: asyncpg.Record) -> Notice:
    error = row["error"]
    data = {
        "execution": {
            "id": str(row["id"]),
            "status": row["status"],
            "attempts": row["attempts"],
            "error": None if error is None else error[:MAX_ERROR_CHARS],
            "event_id": _text(row["event_id"]),
            "replay_of": _text(row["replay_of"]),
            "finished_at": None if row["finished_at"] is None else row["finished_at"].isoformat(),
        },
        "workflow": {"id": str(workflow["id"]), "name": workflow["name"], "action_type": workflow["action_type"]},
        "links": {"execution": f"/api/executions/{row['id']}"},
    }
    return Notice(
        owner_id=row["owner_id"],
        event_type=_EXECUTION_TYPES[row["status"]],
        data=data,
        workflow_id=row["workflow_id"],
        action_type=workflow["action_type"],
        subject_id=str(row["id"]),
    )


def _text(value: object) -> str | None:
    return None if value is None else str(value)
