"""`workflow.failure`: trigger data read back from a failure event, and manual runs of it."""

from __future__ import annotations

from uuid import uuid4

import jsonschema
import orjson

from triggers import failure
from triggers.base import InboxEvent, ManualRun
from triggers.registry import TRIGGERS

NOW = "2026-12-04T11:00:00+00:00"
FAILED = {
    "execution": {
        "id": str(uuid4()),
        "workflow_id": str(uuid4()),
        "workflow_name": "orders",
        "status": "failed",
        "error": "gave up after 2 attempts: HTTP 500",
        "attempts": 2,
        "event_id": None,
        "replay_of": None,
        "started_at": NOW,
        "finished_at": NOW,
    },
    "trigger": {"body": {"order": {"id": "A-1"}}},
}


def _event(body: bytes, max_depth: int = 128) -> InboxEvent:
    workflow_id = str(uuid4())
    return InboxEvent(uuid4(), uuid4(), failure.SOURCE_TYPE, workflow_id, {}, body, NOW, max_json_depth=max_depth)


def test_the_trigger_is_registered_under_its_source_type() -> None:
    assert TRIGGERS["workflow.failure"] is failure.TRIGGER
    assert failure.TRIGGER.source_type == "workflow.failure" and failure.TRIGGER.internal_source is None


def test_trigger_data_is_the_stored_body_with_the_events_id() -> None:
    event = _event(orjson.dumps(FAILED))

    data = failure.TRIGGER.trigger_data(event)

    assert data == {**FAILED, "event_id": str(event.id)}
    jsonschema.validate(data, failure.DATA_SCHEMA)


def test_a_body_deeper_than_the_limit_is_kept_as_text() -> None:
    event = _event(orjson.dumps(FAILED), max_depth=2)

    data = failure.TRIGGER.trigger_data(event)

    assert data["execution"] == {} and isinstance(data["trigger"], str)


def test_a_manual_run_builds_a_sample_failure_around_the_given_trigger_data() -> None:
    assert failure.TRIGGER.manual_data is not None
    given = {"execution": {"error": "HTTP 503"}, "trigger": {"body": {"x": 1}}}

    data = failure.TRIGGER.manual_data(ManualRun("wf", "wf", {}, given, NOW))

    assert data["execution"]["error"] == "HTTP 503" and data["execution"]["attempts"] == 0
    assert data["trigger"] == {"body": {"x": 1}} and data["event_id"] is None
    jsonschema.validate(data, failure.DATA_SCHEMA)


def test_the_config_takes_nothing_and_every_failure_matches() -> None:
    jsonschema.validate({}, failure.CONFIG_SCHEMA)
    assert failure.TRIGGER.match({}, FAILED).matched
