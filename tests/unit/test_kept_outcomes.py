"""What a batch keeps in its heartbeat details: small, and only about its own executions."""

from __future__ import annotations

import uuid

import orjson

from worker.automation.activities import KEPT_RESULT_CHARS, KeptOutcomes, _compact
from worker.automation.contract import Outcome


def _kept(batch: list[str], details: object) -> KeptOutcomes:
    return KeptOutcomes.from_details([details], batch)


def test_a_large_result_is_kept_as_a_bounded_excerpt() -> None:
    execution_id = str(uuid.uuid4())
    item = _compact({"id": execution_id, "status": "succeeded", "error": "x" * 10_000, "result": {"b": "y" * 50_000}})
    assert len(orjson.dumps(item)) < KEPT_RESULT_CHARS + 2_000
    assert item["result"]["truncated"] is True


def test_a_written_outcome_keeps_only_what_the_workflow_is_told() -> None:
    execution_id = str(uuid.uuid4())
    kept = _kept([execution_id], [{"id": execution_id, "status": "running", "retry_in_s": 5.0, "result": {"a": 1}}])
    [record] = kept.unwritten()
    kept.mark_written([record])
    assert kept.unwritten() == []
    assert kept.details() == [
        {"id": execution_id, "status": "running", "retry_in_s": 5.0, "handed_off": None, "written": True}
    ]
    assert kept.outcome(execution_id) == Outcome(execution_id, "retry", 5.0)


def test_details_about_other_executions_or_of_another_shape_are_ignored() -> None:
    mine, other = str(uuid.uuid4()), str(uuid.uuid4())
    kept = _kept([mine], [{"id": other, "status": "succeeded"}, {"id": mine, "status": "bogus"}, "junk"])
    assert mine not in kept and other not in kept
    assert kept.outcome(mine) == Outcome(mine, "skipped")
    assert KeptOutcomes.from_details([{"not": "a list"}], [mine]).details() == []
