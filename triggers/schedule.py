"""`schedule.cron`: a Temporal Schedule fires the workflow on a cron expression or an interval.

Each workflow with this trigger owns one Temporal Schedule, `schedule-<workflow id>`, kept in
step with the row by the sync hook (created, updated, paused while the workflow is inactive,
deleted with it). Each firing starts the small `hookyard.tick` workflow (worker/ticks.py),
whose activity stores an inbox event with source type `schedule` and the workflow id as
source id, deduplicated on the scheduled time; from there it is routed, filtered, listed and
replayable like any webhook event. Temporal sees only the workflow id; the optional static
`payload` is read from the row when the tick is stored.
"""

from __future__ import annotations

import re
import zoneinfo
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from functools import cache
from typing import Any
from uuid import UUID

import asyncpg
import orjson
from temporalio.client import (
    Schedule,
    ScheduleActionStartWorkflow,
    ScheduleAlreadyRunningError,
    ScheduleHandle,
    ScheduleIntervalSpec,
    ScheduleOverlapPolicy,
    SchedulePolicy,
    ScheduleSpec,
    ScheduleState,
    ScheduleUpdate,
    ScheduleUpdateInput,
)
from temporalio.common import RetryPolicy
from temporalio.service import RPCError, RPCStatusCode

from schemas import jsonlimits
from triggers.base import (
    WORKFLOW_ROUTE,
    InboxEvent,
    ManualRun,
    TriggerConfigError,
    TriggerSyncContext,
    TriggerSyncError,
    TriggerType,
    WorkflowSyncState,
    check_filter,
    match_filter,
)
from triggers.filters import filter_schema

NAME = "schedule.cron"
SOURCE_TYPE = "schedule"
TICK_WORKFLOW = "hookyard.tick"
TICK_ACTIVITY = "hookyard.record_tick"

OVERLAP = {
    "skip": ScheduleOverlapPolicy.SKIP,
    "buffer_one": ScheduleOverlapPolicy.BUFFER_ONE,
    "allow_all": ScheduleOverlapPolicy.ALLOW_ALL,
}
DEFAULT_CATCHUP_WINDOW_S = 60
# Bounds how long one tick may keep retrying its insert (and, with overlap `skip`, hold back
# the next firing) while PostgreSQL is unreachable.
TICK_TIMEOUT = timedelta(minutes=15)

CONFIG_SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "description": "Give exactly one of `cron` and `interval_s`.",
    "properties": {
        "cron": {
            "type": "string",
            "minLength": 1,
            "maxLength": 200,
            "description": "Five fields: minute hour day-of-month month day-of-week (numbers, `*`, "
            "ranges `a-b`, steps `/n`, lists `a,b`, JAN-DEC, SUN-SAT; 0 and 7 are Sunday), or @hourly, "
            "@daily, @weekly, @monthly, @yearly. When both day fields are restricted, a time must match both.",
        },
        "interval_s": {
            "type": "integer",
            "minimum": 1,
            "maximum": 366 * 86400,
            "description": "Fire every this many seconds (counted from the Unix epoch).",
        },
        "timezone": {
            "type": "string",
            "default": "UTC",
            "maxLength": 100,
            "description": "IANA time zone the cron expression is read in, e.g. Europe/Paris.",
        },
        "jitter_s": {
            "type": "integer",
            "minimum": 0,
            "maximum": 86400,
            "default": 0,
            "description": "Delay each firing by a random amount up to this many seconds.",
        },
        "overlap": {
            "enum": list(OVERLAP),
            "default": "skip",
            "description": "When a tick is due while the previous one is still being stored.",
        },
        "catchup_window_s": {
            "type": "integer",
            "minimum": 10,
            "maximum": 7 * 86400,
            "default": DEFAULT_CATCHUP_WINDOW_S,
            "description": "After an outage, firings missed up to this long ago still happen.",
        },
        "filter": {
            **filter_schema(),
            "description": "Optional condition over the trigger data (`scheduled_at`, `payload`, ...).",
        },
        "payload": {"description": "Static JSON given to every firing as `trigger.payload`."},
    },
}


@dataclass
class TickInput:
    """Input of the `hookyard.tick` workflow: only the id, the rest stays in PostgreSQL."""

    workflow_id: str


def schedule_id(workflow_id: UUID | str) -> str:
    """Temporal Schedule id of a workflow (no names or data in it)."""
    return f"schedule-{workflow_id}"


def tick_workflow_id(workflow_id: UUID | str) -> str:
    """Id prefix of the tick workflows; Temporal appends the scheduled time to it."""
    return f"tick-{workflow_id}"


# --- cron and time zone validation ------------------------------------------------------

_MACROS = ("@hourly", "@daily", "@weekly", "@monthly", "@yearly")
_MONTHS = ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC")
_DAYS = ("SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT")


@dataclass(frozen=True, slots=True)
class _Field:
    name: str
    low: int
    high: int
    names: tuple[str, ...] = ()
    first_name: int = 0


_FIELDS = (
    _Field("minute", 0, 59),
    _Field("hour", 0, 23),
    _Field("day of month", 1, 31),
    _Field("month", 1, 12, _MONTHS, 1),
    _Field("day of week", 0, 7, _DAYS, 0),  # 0 and 7 are both Sunday
)
_NUMBER = re.compile(r"[0-9]{1,2}")
_WORD = re.compile(r"[A-Za-z]{3}")


class CronError(ValueError):
    """A cron expression is not one the schedule accepts; the message names the field."""


def validate_cron(expression: str) -> None:
    """Raise `CronError` unless `expression` is a 5-field cron expression or a known macro."""
    text = expression.strip()
    if text.startswith("@"):
        if text.lower() not in _MACROS:
            raise CronError(f"unknown macro {text[:20]!r}; use one of {', '.join(_MACROS)} or interval_s")
        return
    if text.upper().startswith(("CRON_TZ=", "TZ=")):
        raise CronError("give the time zone in `timezone`, not in the expression")
    parts = text.split()
    if len(parts) != len(_FIELDS):
        raise CronError(f"expected 5 fields (minute hour day-of-month month day-of-week), got {len(parts)}")
    for part, spec in zip(parts, _FIELDS, strict=True):
        for item in part.split(","):
            _check_item(item, spec)


def _check_item(item: str, spec: _Field) -> None:
    where = f"{spec.name} field"
    base, slash, step = item.partition("/")
    if slash and (not _NUMBER.fullmatch(step) or int(step) == 0):
        raise CronError(f"{where}: step must be a number from 1 to 99")
    if base == "*":
        return
    low_text, dash, high_text = base.partition("-")
    low = _value(low_text, spec)
    if dash:
        high = _value(high_text, spec)
        if high < low:
            raise CronError(f"{where}: range {low}-{high} runs backwards")


def _value(text: str, spec: _Field) -> int:
    where = f"{spec.name} field"
    if _NUMBER.fullmatch(text):
        value = int(text)
    elif spec.names and _WORD.fullmatch(text) and text.upper() in spec.names:
        return spec.names.index(text.upper()) + spec.first_name
    else:
        allowed = f" or {spec.names[0]}-{spec.names[-1]}" if spec.names else ""
        raise CronError(f"{where}: expected a number{allowed}, `*`, a range or a list")
    if not spec.low <= value <= spec.high:
        raise CronError(f"{where}: {value} is outside {spec.low}-{spec.high}")
    return value


@cache
def _time_zones() -> frozenset[str]:
    return frozenset(zoneinfo.available_timezones())


def validate_timezone(name: str) -> None:
    """Raise `ValueError` unless `name` is an IANA time zone known here (e.g. Europe/Paris)."""
    # Looked up in the list rather than opened: a name is never used as a path.
    if name != "UTC" and name not in _time_zones():
        raise ValueError(f"unknown time zone {name[:60]!r}; use an IANA name such as Europe/Paris")


def validate_config(config: Mapping[str, Any]) -> None:
    """Raise `TriggerConfigError` for what the JSON Schema cannot express (pure: no I/O)."""
    has_cron, has_interval = "cron" in config, "interval_s" in config
    if has_cron == has_interval:
        raise TriggerConfigError("trigger.config", "give exactly one of `cron` and `interval_s`")
    if has_cron:
        try:
            validate_cron(config["cron"])
        except CronError as exc:
            raise TriggerConfigError("trigger.config.cron", str(exc)) from None
    try:
        validate_timezone(config.get("timezone", "UTC"))
    except ValueError as exc:
        raise TriggerConfigError("trigger.config.timezone", str(exc)) from None
    check_filter(config)


async def _check(conn: asyncpg.Connection, owner_id: UUID, config: Mapping[str, Any]) -> None:
    validate_config(config)


# --- the Temporal Schedule ---------------------------------------------------------------


def build_schedule(workflow_id: UUID, config: Mapping[str, Any], task_queue: str, *, paused: bool) -> Schedule:
    """The Temporal Schedule that fires this workflow's ticks."""
    spec = ScheduleSpec(
        time_zone_name=config.get("timezone", "UTC"),
        jitter=timedelta(seconds=config.get("jitter_s", 0)) or None,
    )
    if "cron" in config:
        spec.cron_expressions = [config["cron"].strip()]
    else:
        spec.intervals = [ScheduleIntervalSpec(every=timedelta(seconds=config["interval_s"]))]
    action = ScheduleActionStartWorkflow(
        TICK_WORKFLOW,
        TickInput(workflow_id=str(workflow_id)),
        id=tick_workflow_id(workflow_id),
        task_queue=task_queue,
        execution_timeout=TICK_TIMEOUT,
        retry_policy=RetryPolicy(maximum_attempts=3),
    )
    policy = SchedulePolicy(
        overlap=OVERLAP[config.get("overlap", "skip")],
        catchup_window=timedelta(seconds=config.get("catchup_window_s", DEFAULT_CATCHUP_WINDOW_S)),
    )
    return Schedule(action=action, spec=spec, policy=policy, state=ScheduleState(paused=paused))


async def sync_schedule(ctx: TriggerSyncContext, state: WorkflowSyncState) -> None:
    """Converge the workflow's Temporal Schedule to its row: create, update, pause or delete."""
    handle = ctx.temporal.get_schedule_handle(schedule_id(state.id))
    try:
        if state.deleted:
            await _delete(handle)
            return
        schedule = build_schedule(state.id, state.trigger_config, ctx.settings.task_queue, paused=not state.active)
        try:
            await ctx.temporal.create_schedule(handle.id, schedule)
            return
        except ScheduleAlreadyRunningError:
            pass

        def replace(_: ScheduleUpdateInput) -> ScheduleUpdate:
            return ScheduleUpdate(schedule=schedule)

        await handle.update(replace)
        # Pausing is schedule state, which an update may leave as it was: set it explicitly.
        described = await handle.describe()
        if described.schedule.state.paused and state.active:
            await handle.unpause()
        elif not described.schedule.state.paused and not state.active:
            await handle.pause()
    except RPCError as exc:
        if exc.status == RPCStatusCode.INVALID_ARGUMENT:
            # The definition itself is the problem; retrying the same one will not help.
            raise TriggerSyncError(f"Temporal refused the schedule: {exc.message[:300]}") from None
        raise


async def _delete(handle: ScheduleHandle) -> None:
    try:
        await handle.delete()
    except RPCError as exc:
        if exc.status != RPCStatusCode.NOT_FOUND:
            raise


# --- events -----------------------------------------------------------------------------


def _trigger_data(event: InboxEvent) -> dict[str, Any]:
    try:
        body = jsonlimits.loads(event.body, event.max_json_depth)
    except orjson.JSONDecodeError:
        body = {}
    if not isinstance(body, dict):
        body = {}
    return {
        "event_id": str(event.id),
        "workflow_id": event.source_id,
        "scheduled_at": body.get("scheduled_at"),
        "fired_at": body.get("fired_at"),
        "received_at": event.received_at,
        "payload": body.get("payload"),
    }


def _manual(run: ManualRun) -> dict[str, Any]:
    return {
        "event_id": None,
        "workflow_id": run.workflow_id,
        "scheduled_at": run.now,
        "fired_at": run.now,
        "received_at": run.now,
        # An empty body runs with the schedule's own static payload, as a firing would.
        "payload": run.given if run.given else run.config.get("payload"),
    }


TRIGGER = TriggerType(
    name=NAME,
    source_type=SOURCE_TYPE,
    description="Fires on a cron expression or a fixed interval, in a time zone; optionally filtered.",
    config_schema=CONFIG_SCHEMA,
    routing_key=lambda config: WORKFLOW_ROUTE,
    trigger_data=_trigger_data,
    match=match_filter,
    check_config=_check,
    sync=sync_schedule,
    manual_data=_manual,
    manual_doc="The request body is the payload (empty: the schedule's own `payload`); `scheduled_at` is now: "
    'trigger data {"event_id": null, "workflow_id", "scheduled_at", "fired_at", "received_at", "payload"}.',
)
