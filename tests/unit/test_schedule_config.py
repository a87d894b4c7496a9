"""Specification of schedule trigger configs: cron, time zone, the Temporal Schedule they become."""

from __future__ import annotations

import contextlib
from datetime import timedelta
from uuid import uuid4

import pytest
from hypothesis import given
from hypothesis import strategies as st
from temporalio.client import ScheduleActionStartWorkflow, ScheduleOverlapPolicy

from triggers.base import TriggerConfigError
from triggers.schedule import (
    OVERLAP_CHOICES,
    CronError,
    validate_config,
    validate_cron,
    validate_timezone,
)
from triggers.tick import BadScheduledTime, scheduled_time
from worker.schedule_cron.contract import TickInput, schedule_id
from worker.schedule_cron.schedule import OVERLAP, build_schedule


@pytest.mark.parametrize(
    "expression",
    [
        "* * * * *",
        "*/5 * * * *",
        "0 9 * * MON-FRI",
        "30 2 1,15 * *",
        "0 0 1 jan,jul *",
        "0-30/10 8-18 * * 1-5",
        "59 23 31 12 6",
        "0 0 * * 7",
        "  0 12 * * SUN  ",
        "@daily",
        "@HOURLY",
        "@yearly",
    ],
)
def test_accepted_cron_expressions(expression: str) -> None:
    validate_cron(expression)


@pytest.mark.parametrize(
    ("expression", "message"),
    [
        ("* * * *", "expected 5 fields"),
        ("0 0 * * * 2030", "expected 5 fields"),
        ("60 * * * *", "minute field: 60 is outside 0-59"),
        ("* 24 * * *", "hour field: 24 is outside 0-23"),
        ("* * 0 * *", "day of month field: 0 is outside 1-31"),
        ("* * * 13 *", "month field: 13 is outside 1-12"),
        ("* * * * 8", "day of week field: 8 is outside 0-7"),
        ("* * * FOO *", "month field: expected a number or JAN-DEC"),
        ("* * * * MON-FOO", "day of week field"),
        ("*/0 * * * *", "minute field: step must be a number from 1 to 99"),
        ("30-10 * * * *", "minute field: range 30-10 runs backwards"),
        ("1,,2 * * * *", "minute field"),
        ("? * * * *", "minute field"),
        ("L * * * *", "minute field"),
        ("@every 5m", "unknown macro"),
        ("@reboot", "unknown macro"),
        ("CRON_TZ=Europe/Paris 0 9 * * *", "give the time zone in `timezone`"),
    ],
)
def test_rejected_cron_expressions_name_the_field_and_the_problem(expression: str, message: str) -> None:
    with pytest.raises(CronError, match=message):
        validate_cron(expression)


@given(st.text(max_size=60))
def test_any_text_is_either_accepted_or_refused_with_a_cron_error(text: str) -> None:
    with contextlib.suppress(CronError):
        validate_cron(text)


def _field(low: int, high: int) -> st.SearchStrategy[str]:
    value = st.integers(low, high)
    return st.one_of(
        st.just("*"),
        value.map(str),
        st.tuples(value, value).map(lambda r: f"{min(r)}-{max(r)}"),
        st.integers(1, 30).map(lambda step: f"*/{step}"),
        st.lists(value.map(str), min_size=2, max_size=4).map(",".join),
    )


@given(st.tuples(_field(0, 59), _field(0, 23), _field(1, 31), _field(1, 12), _field(0, 7)))
def test_generated_expressions_within_every_field_range_are_accepted(fields: tuple[str, ...]) -> None:
    validate_cron(" ".join(fields))


@pytest.mark.parametrize("name", ["UTC", "Europe/Paris", "America/Argentina/Buenos_Aires", "Asia/Kolkata"])
def test_iana_time_zones_are_accepted(name: str) -> None:
    validate_timezone(name)


@pytest.mark.parametrize("name", ["Mars/Olympus", "europe/paris", "", "../../etc/passwd", "/usr/share/zoneinfo/UTC"])
def test_unknown_time_zones_are_refused(name: str) -> None:
    with pytest.raises(ValueError, match="unknown time zone"):
        validate_timezone(name)


def test_config_needs_exactly_one_of_cron_and_interval() -> None:
    for config in ({}, {"cron": "* * * * *", "interval_s": 60}):
        with pytest.raises(TriggerConfigError, match="exactly one of `cron` and `interval_s`") as raised:
            validate_config(config)
        assert raised.value.field == "trigger.config"


def test_config_errors_name_the_offending_field() -> None:
    cases = [
        ({"cron": "61 * * * *"}, "trigger.config.cron"),
        ({"cron": "* * * * *", "timezone": "Nowhere/Land"}, "trigger.config.timezone"),
        ({"interval_s": 60, "filter": {"path": "payload.x", "op": "bigger", "value": 1}}, "trigger.config.filter"),
    ]
    for config, field in cases:
        with pytest.raises(TriggerConfigError) as raised:
            validate_config(config)
        assert raised.value.field == field


def test_valid_configs_pass() -> None:
    validate_config({"cron": "0 9 * * MON-FRI", "timezone": "Europe/Paris", "jitter_s": 30})
    validate_config({"interval_s": 1, "payload": {"report": "daily"}, "filter": {"path": "payload", "op": "exists"}})


def test_a_cron_config_becomes_a_schedule_in_its_time_zone_with_a_short_catchup_window() -> None:
    workflow_id = uuid4()
    schedule = build_schedule(workflow_id, {"cron": " 0 9 * * MON-FRI ", "timezone": "Europe/Paris"}, "q", paused=False)

    assert schedule.spec.cron_expressions == ["0 9 * * MON-FRI"]
    assert schedule.spec.time_zone_name == "Europe/Paris"
    assert schedule.spec.jitter is None
    assert schedule.policy.overlap == ScheduleOverlapPolicy.SKIP
    assert schedule.policy.catchup_window == timedelta(seconds=60)
    assert schedule.state.paused is False
    action = schedule.action
    assert isinstance(action, ScheduleActionStartWorkflow)
    assert action.workflow == "hookyard.tick"
    assert action.id == f"tick-{workflow_id}"
    assert action.task_queue == "q"
    assert list(action.args) == [TickInput(workflow_id=str(workflow_id))]
    assert action.retry_policy is not None


def test_an_interval_config_maps_jitter_overlap_catchup_and_pause() -> None:
    config = {"interval_s": 90, "jitter_s": 5, "overlap": "buffer_one", "catchup_window_s": 600}
    schedule = build_schedule(uuid4(), config, "q", paused=True)

    assert [i.every for i in schedule.spec.intervals] == [timedelta(seconds=90)]
    assert schedule.spec.cron_expressions == []
    assert schedule.spec.jitter == timedelta(seconds=5)
    assert schedule.policy.overlap == ScheduleOverlapPolicy.BUFFER_ONE
    assert schedule.policy.catchup_window == timedelta(seconds=600)
    assert schedule.state.paused is True


def test_allow_all_overlap_maps_to_temporal_allow_all() -> None:
    schedule = build_schedule(uuid4(), {"interval_s": 60, "overlap": "allow_all"}, "q", paused=False)
    assert schedule.policy.overlap == ScheduleOverlapPolicy.ALLOW_ALL


def test_every_overlap_choice_of_the_config_maps_to_a_temporal_policy() -> None:
    assert tuple(OVERLAP) == OVERLAP_CHOICES


def test_schedule_ids_carry_only_the_workflow_id() -> None:
    workflow_id = uuid4()
    assert schedule_id(workflow_id) == f"schedule-{workflow_id}"


# --- scheduled times of external ticks ---------------------------------------------------


def test_scheduled_time_headers_are_read_in_canonical_utc() -> None:
    assert scheduled_time({"x-scheduled-time": "2026-01-31T10:00:00+01:00"}, b"") == "2026-01-31T09:00:00Z"
    assert scheduled_time({"x-cloudscheduler-scheduletime": "2026-01-31T09:00:00Z"}, b"") == "2026-01-31T09:00:00Z"
    assert scheduled_time({"x-scheduled-time": "1769850000"}, b"") == "2026-01-31T09:00:00Z"


def test_scheduled_time_header_wins_over_the_body_field() -> None:
    body = b'{"scheduled_time": "2020-01-01T00:00:00Z"}'
    assert scheduled_time({"x-scheduled-time": "2026-01-31T09:00:00Z"}, body) == "2026-01-31T09:00:00Z"
    assert scheduled_time({}, body) == "2020-01-01T00:00:00Z"


def test_no_scheduled_time_is_none() -> None:
    assert scheduled_time({}, b"") is None
    assert scheduled_time({}, b'{"other": 1}') is None
    assert scheduled_time({}, b'not json but mentions "scheduled_time"') is None


@pytest.mark.parametrize(
    ("headers", "body"),
    [
        ({"x-scheduled-time": "yesterday"}, b""),
        ({"x-scheduled-time": "2026-01-31T09:00:00"}, b""),  # no offset: ambiguous
        ({}, b'{"scheduled_time": true}'),
        ({}, b'{"scheduled_time": 1.5}'),
        ({}, b'{"scheduled_time": "99999999999999999"}'),
    ],
)
def test_unreadable_scheduled_times_are_refused(headers: dict[str, str], body: bytes) -> None:
    with pytest.raises(BadScheduledTime):
        scheduled_time(headers, body)


@given(st.text(max_size=40))
def test_any_scheduled_time_header_is_read_or_refused_cleanly(value: str) -> None:
    try:
        result = scheduled_time({"x-scheduled-time": value}, b"")
    except BadScheduledTime:
        return
    assert result is None or result.endswith("Z")
