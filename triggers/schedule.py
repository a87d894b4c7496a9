"""`schedule.cron`: a Temporal Schedule fires the workflow on a cron expression or an interval.

Each workflow with this trigger owns one Temporal Schedule, `schedule-<workflow id>`, kept in
step with the row by the dispatcher's trigger sync loop (created, updated, paused while the
workflow is inactive, deleted with it). Each firing starts the small `hookyard.tick` workflow;
both are the worker's `schedule.cron` capability (worker/schedule_cron/). Its activity stores
an inbox event with source type `schedule` and the workflow id as source id, deduplicated on
the scheduled time; from there it is routed, filtered, listed and replayable like any webhook
event. Temporal sees only the workflow id; the optional static
`payload` is read from the row when the tick is stored.
"""

from __future__ import annotations

import re
import zoneinfo
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from typing import Any
from uuid import UUID

import asyncpg
import orjson

from schemas import jsonlimits
from triggers.base import (
    WORKFLOW_ROUTE,
    InboxEvent,
    ManualRun,
    TriggerConfigError,
    TriggerType,
    check_filter,
    match_filter,
)
from triggers.filters import filter_schema

NAME = "schedule.cron"
SOURCE_TYPE = "schedule"
OVERLAP_CHOICES = ("skip", "buffer_one", "allow_all")
DEFAULT_CATCHUP_WINDOW_S = 60

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
            "enum": list(OVERLAP_CHOICES),
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
    manual_data=_manual,
    manual_doc="The request body is the payload (empty: the schedule's own `payload`); `scheduled_at` is now: "
    'trigger data {"event_id": null, "workflow_id", "scheduled_at", "fired_at", "received_at", "payload"}.',
)
