"""The automation workflow never holds one execution twice, however often it is re-driven."""

from __future__ import annotations

from worker.automation.contract import Enqueue
from worker.automation.workflow import _RECENT_KEPT, AutomationWorkflow


def _run_and_finish(wf: AutomationWorkflow, execution_id: str) -> None:
    wf._pending.remove(execution_id)
    wf._inflight.add(execution_id)
    wf._inflight.discard(execution_id)
    wf._finish(execution_id)


def test_a_redriven_execution_still_pending_is_not_queued_again_after_its_old_entry_ages_out() -> None:
    wf = AutomationWorkflow()
    wf.enqueue(Enqueue(["x"], 1))
    _run_and_finish(wf, "x")
    wf.enqueue(Enqueue(["x"], 1, redrive=["x"]))  # the reconciler hands it back: pending again
    for n in range(_RECENT_KEPT):  # others finish; the old "x" entry leaves the recent list
        wf.enqueue(Enqueue([f"other-{n}"], 1))
        _run_and_finish(wf, f"other-{n}")
    wf.enqueue(Enqueue(["x"], 1, redrive=["x"]))  # handed back again while still pending
    assert list(wf._pending).count("x") == 1


def test_an_execution_finished_long_ago_is_forgotten_when_it_ages_out() -> None:
    wf = AutomationWorkflow()
    wf.enqueue(Enqueue(["x"], 1))
    _run_and_finish(wf, "x")
    for n in range(_RECENT_KEPT):
        wf.enqueue(Enqueue([f"other-{n}"], 1))
        _run_and_finish(wf, f"other-{n}")
    assert "x" not in wf._known
