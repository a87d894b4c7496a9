"""Manual runs build trigger data of the shape each trigger type's real events have."""

from __future__ import annotations

from datetime import UTC, datetime
from uuid import uuid4

import orjson
import pytest

from triggers.base import InboxEvent, ManualRun
from triggers.registry import TRIGGERS

ID = str(uuid4())
NOW = datetime.now(UTC).isoformat()
REAL_BODIES = {
    "webhook.received": b'{"order": {"id": 1}}',
    "schedule.tick": b'{"scheduled_time": "2026-01-31T02:00:00Z"}',
    "schedule.cron": orjson.dumps({"scheduled_at": NOW, "fired_at": NOW, "payload": {"a": 1}}),
    "gmail.receive-email": orjson.dumps({"id": "m1", "from": "a@example.test", "subject": "s"}),
    "workflow.failure": orjson.dumps({"execution": {"id": ID, "error": "HTTP 500"}, "trigger": {"body": {}}}),
    "postgres.outbox": orjson.dumps(
        {"table": "t", "row_id": "1", "generation": 1, "claimed_from": "PENDING", "attempt": 1, "row": {"id": 1}}
    ),
}


@pytest.mark.parametrize("name", sorted(TRIGGERS))
def test_every_trigger_type_builds_manual_data_with_the_keys_of_its_real_events(name: str) -> None:
    trigger = TRIGGERS[name]
    assert trigger.manual_data is not None and trigger.manual_doc, f"{name} documents no manual run"
    real = trigger.trigger_data(InboxEvent(uuid4(), uuid4(), trigger.source_type, ID, {}, REAL_BODIES[name], NOW))
    manual = trigger.manual_data(ManualRun(ID, ID, {}, {"x": 1}, NOW))
    if name == "gmail.receive-email":
        from triggers.gmail import message_data

        real = {**message_data({}, mailbox=ID, account=None), **real}
    assert set(real) <= set(manual)
    assert manual["event_id"] is None


def test_a_webhook_manual_run_puts_the_body_under_body_with_no_headers() -> None:
    manual = TRIGGERS["webhook.received"].manual_data(ManualRun(ID, ID, {}, {"order": {"id": "T-1"}}, NOW))  # type: ignore[misc]
    assert manual["body"] == {"order": {"id": "T-1"}} and manual["headers"] == {} and manual["endpoint_id"] == ID
