"""When the reconciler hands an open execution over again, and when it must not."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from schemas.store.executions import ATTEMPT_IN_FLIGHT_S
from worker.automation.contract import BATCH_START_TO_CLOSE_S
from worker.dispatch.reconciler import Bounds, stranded_reason

NOW = datetime(2026, 1, 1, tzinfo=UTC)
BOUNDS = Bounds(grace=timedelta(seconds=30))
LONG_AGO = NOW - timedelta(hours=1)


def row(status: str, *, next_at: datetime | None = None, attempt_at: datetime | None = None) -> dict[str, Any]:
    return {
        "status": status,
        "now": NOW,
        "signalled_at": NOW - timedelta(minutes=1),
        "next_attempt_at": next_at,
        "attempt_started_at": attempt_at,
    }


def test_the_in_flight_bound_is_the_batch_activity_start_to_close() -> None:
    assert ATTEMPT_IN_FLIGHT_S == BATCH_START_TO_CLOSE_S


def test_a_queued_execution_of_a_workflow_that_is_gone_is_handed_over() -> None:
    assert stranded_reason(row("queued"), False, BOUNDS) == "workflow_gone"


def test_a_retry_of_a_workflow_that_is_gone_waits_until_it_is_due() -> None:
    assert stranded_reason(row("running", next_at=NOW + timedelta(seconds=5)), False, BOUNDS) is None
    assert stranded_reason(row("running", next_at=NOW - timedelta(seconds=1)), False, BOUNDS) == "workflow_gone"


def test_an_attempt_that_may_still_be_in_flight_is_left_alone_even_if_the_workflow_is_gone() -> None:
    assert stranded_reason(row("running", attempt_at=NOW - timedelta(minutes=5)), False, BOUNDS) is None
    assert stranded_reason(row("running", attempt_at=LONG_AGO), False, BOUNDS) == "workflow_gone"


def test_a_running_workflow_is_only_sent_what_is_overdue() -> None:
    assert stranded_reason(row("queued"), True, BOUNDS) is None
    assert stranded_reason(row("running", next_at=NOW - timedelta(seconds=10)), True, BOUNDS) is None
    assert stranded_reason(row("running", next_at=NOW - timedelta(minutes=5)), True, BOUNDS) == "retry_overdue"
    assert stranded_reason(row("running", attempt_at=NOW - timedelta(minutes=1)), True, BOUNDS) is None
    assert stranded_reason(row("running", attempt_at=LONG_AGO), True, BOUNDS) == "attempt_overdue"


def test_an_execution_signalled_before_the_running_chain_began_counts_as_its_workflow_gone() -> None:
    started_after = NOW - timedelta(seconds=20)  # signalled a minute ago, to a chain since ended
    assert stranded_reason(row("queued"), True, BOUNDS, started_after) == "workflow_gone"
    assert stranded_reason(row("queued"), True, BOUNDS, NOW - timedelta(hours=1)) is None
