"""The lane workflow's bookkeeping: per-workflow queues and limits, round-robin batches, dedup."""

from __future__ import annotations

import pytest

from settings import SettingsError, load_settings
from worker.automation.contract import LaneEnqueue, LaneState, LaneWork, Retry
from worker.automation.lane import RECENT_KEPT, LaneWorkflow


def _lane(max_batch: int = 10) -> LaneWorkflow:
    lane = LaneWorkflow()
    lane._restore(LaneState(lane=0, max_batch=max_batch))
    return lane


def _finish(lane: LaneWorkflow, execution_id: str) -> None:
    workflow_id = lane._inflight.pop(execution_id)
    queue = lane._queues[workflow_id]
    queue.inflight -= 1
    lane._finish(queue, execution_id)


def test_a_batch_takes_one_execution_of_each_workflow_per_round() -> None:
    lane = _lane(max_batch=5)
    lane.enqueue(LaneEnqueue([LaneWork("hot", [f"h{n}" for n in range(10)]), LaneWork("cold", ["c0"])]))
    assert lane._fill() == ["h0", "c0", "h1", "h2", "h3"]


def test_the_next_batch_starts_with_the_workflow_after_the_last_one_served() -> None:
    lane = _lane(max_batch=3)
    lane.enqueue(LaneEnqueue([LaneWork(w, [f"{w}{n}" for n in range(3)]) for w in ("a", "b", "c", "d")]))
    assert lane._fill() == ["a0", "b0", "c0"]
    assert lane._fill() == ["d0", "a1", "b1"]


def test_a_workflow_at_its_concurrency_limit_waits_while_others_in_the_lane_run() -> None:
    lane = _lane()
    lane.enqueue(LaneEnqueue([LaneWork("limited", ["l0", "l1", "l2"], 1), LaneWork("other", ["o0", "o1"], 5)]))
    assert lane._fill() == ["l0", "o0", "o1"]
    assert lane._fill() == []  # "limited" has one in flight
    _finish(lane, "l0")
    assert lane._fill() == ["l1"]


def test_ids_sent_again_after_a_dispatcher_crash_are_ignored() -> None:
    lane = _lane()
    lane.enqueue(LaneEnqueue([LaneWork("w", ["x", "y"])]))
    lane.enqueue(LaneEnqueue([LaneWork("w", ["x", "y"])]))
    assert lane._fill() == ["x", "y"]
    _finish(lane, "x")
    lane.enqueue(LaneEnqueue([LaneWork("w", ["x"])]))
    assert lane._fill() == []


def test_a_redriven_execution_still_open_is_not_queued_again_after_its_old_entry_ages_out() -> None:
    lane = _lane()
    lane.enqueue(LaneEnqueue([LaneWork("w", ["x"])]))
    lane._fill()
    _finish(lane, "x")
    lane.enqueue(LaneEnqueue([LaneWork("w", ["x"], redrive=["x"])]))  # handed back: pending again
    for n in range(RECENT_KEPT):  # others finish; the old "x" entry leaves the recent list
        lane.enqueue(LaneEnqueue([LaneWork("v", [f"other-{n}"])]))
        for execution_id in lane._fill():
            if execution_id != "x":
                _finish(lane, execution_id)
    lane.enqueue(LaneEnqueue([LaneWork("w", ["x"], redrive=["x"])]))  # handed back again while open
    assert sum(q.pending.count("x") for q in lane._queues.values()) + ("x" in lane._inflight) == 1


def test_a_workflow_with_nothing_left_leaves_the_lane() -> None:
    lane = _lane()
    lane.enqueue(LaneEnqueue([LaneWork("w", ["x"])]))
    lane._fill()
    _finish(lane, "x")
    assert lane._queues == {}


def test_continue_as_new_carries_each_workflows_queue_and_retries() -> None:
    lane = _lane(max_batch=1)
    lane.enqueue(LaneEnqueue([LaneWork("a", ["a0", "a1"], 3), LaneWork("b", ["b0"], 2)]))
    lane._queues["b"].retries.append(Retry("b9", 123.0))
    lane._open.add("b9")
    carried = lane._snapshot()
    again = LaneWorkflow()
    again.enqueue(LaneEnqueue([LaneWork("c", ["c0"])]))  # handled before run() restores the state
    again._restore(carried)
    assert {w: (q.limit, list(q.pending), q.retries) for w, q in again._queues.items()} == {
        "a": (3, ["a0", "a1"], []),
        "b": (2, ["b0"], [Retry("b9", 123.0)]),
        "c": (10, ["c0"], []),
    }
    assert again._open == {"a0", "a1", "b0", "b9", "c0"}


def test_a_lane_count_outside_what_workflows_can_store_is_refused_at_start() -> None:
    with pytest.raises(SettingsError, match="HOOKYARD_LANES"):
        load_settings({"HOOKYARD_LANES": "5000"})
    with pytest.raises(SettingsError, match="HOOKYARD_LANE_MAX_PENDING"):
        load_settings({"HOOKYARD_LANE_MAX_PENDING": "1000000"})
    assert load_settings({"HOOKYARD_LANES": "0"}).lanes == 0
