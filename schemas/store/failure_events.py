"""Error workflows: an execution that fails for good starts its workflow's `on_failure` workflow.

`start_error_workflows` runs in the transaction that makes executions terminal
(`schemas.store.terminal.after_terminal`), so the failure event and the error workflow's
execution are committed exactly when the failure is: a crash before the commit loses neither,
and a repeated outcome write (which changes no row, so reports no terminal transition) adds
nothing. The event is deduplicated on the failed execution's id all the same, and the execution
is unique per (workflow, event), so even a second call with the same rows inserts nothing.

Loops are impossible: a failure of an execution that a failure event started (the error
workflow's own run, or a replay of it) starts nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any
from uuid import UUID

import asyncpg

from schemas.db import in_savepoint
from schemas.store.events import EVENTS_CHANNEL

log = logging.getLogger(__name__)

# The inbox source of failure events, and the trigger type of workflows they start
# (`triggers/failure.py`). No ingest route writes this source: only this module does.
SOURCE_TYPE = "workflow.failure"

_REASON = "an execution of the workflow naming this one as on_failure failed for good"

# One statement: plan (the failed executions whose workflow names a live, active error workflow
# of the same owner), store the failure events (dispatched already: the dispatcher has nothing
# to resolve) and queue one execution per event stored. A failure event that exists already
# (`ON CONFLICT DO NOTHING`) queues nothing. The ids are drawn in the MATERIALIZED plan so the
# event's resolution can name its execution.
_START = f"""
WITH planned AS MATERIALIZED (
    SELECT x.id AS failed_id, x.owner_id, t.id AS target_id,
           gen_random_uuid() AS event_id, gen_random_uuid() AS execution_id,
           jsonb_build_object(
               'execution', jsonb_build_object(
                   'id', x.id, 'workflow_id', x.workflow_id, 'workflow_name', w.name,
                   'status', x.status, 'error', x.error, 'attempts', x.attempts,
                   'event_id', x.event_id, 'replay_of', x.replay_of,
                   'started_at', x.started_at, 'finished_at', x.finished_at),
               'trigger', x.trigger_data) AS data
    FROM executions x
    JOIN workflows w ON w.id = x.workflow_id
    JOIN workflows t ON t.id = w.on_failure AND t.owner_id = x.owner_id AND t.trigger_type = $2
        AND t.active AND t.deleted_at IS NULL
    LEFT JOIN events e ON e.id = x.event_id
    WHERE x.id = ANY($1::uuid[]) AND x.status = 'failed' AND e.source_type IS DISTINCT FROM $2
), stored AS (
    INSERT INTO events (id, owner_id, source_type, source_id, dedup_key, body, status, resolution, dispatched_at)
    SELECT p.event_id, p.owner_id, $2, p.target_id::text, p.failed_id::text, convert_to(p.data::text, 'UTF8'),
           'dispatched',
           jsonb_build_array(jsonb_build_object(
               'workflow_id', p.target_id, 'trigger', $2::text, 'matched', true, 'reason', $3::text,
               'trace', '[]'::jsonb, 'execution_id', p.execution_id)),
           now()
    FROM planned p
    ON CONFLICT (source_type, source_id, dedup_key) DO NOTHING
    RETURNING id
), queued AS (
    INSERT INTO executions (id, owner_id, workflow_id, event_id, trigger_data)
    SELECT p.execution_id, p.owner_id, p.target_id, p.event_id, p.data || jsonb_build_object('event_id', p.event_id)
    FROM planned p JOIN stored s ON s.id = p.event_id
    ON CONFLICT DO NOTHING
    RETURNING id
)
SELECT q.id, pg_notify('{EVENTS_CHANNEL}', '') FROM queued q
"""


async def start_error_workflows(conn: asyncpg.Connection, rows: Sequence[Mapping[str, Any]]) -> list[UUID]:
    """Queue the error workflow of each of these just-terminal executions that failed; their ids.

    `rows` are the executions' terminal transitions (at least `id` and `status`); call inside
    the transaction that wrote them. Succeeded and cancelled executions, workflows without
    `on_failure`, error workflows that are inactive, deleted or no longer `workflow.failure`
    workflows, and failures of executions a failure event started are skipped. Costs no round
    trip when none of the rows failed.
    """
    failed = [row["id"] for row in rows if row["status"] == "failed"]
    if not failed:
        return []
    # A failure event that cannot be written (a defect) must not undo the outcomes that caused it.
    started: list[asyncpg.Record] = await in_savepoint(
        conn,
        lambda: conn.fetch(_START, failed, SOURCE_TYPE, _REASON),
        [],
        f"error workflows of {len(failed)} failed executions",
    )
    # pg_notify is sent at commit (one notification per transaction and channel), waking the
    # dispatcher's hand-over.
    return [r["id"] for r in started]
