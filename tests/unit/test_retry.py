"""Per-execution retry decisions."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from worker.automation.retry import next_delay

POLICY = {"max_attempts": 4, "initial_interval_s": 1.0, "backoff": 2.0, "max_interval_s": 5.0}


def test_backoff_doubles_from_the_initial_interval() -> None:
    assert [next_delay(POLICY, attempt, None) for attempt in (1, 2, 3)] == [1.0, 2.0, 4.0]


def test_no_retry_once_attempts_are_used_up() -> None:
    assert next_delay(POLICY, 4, None) is None


def test_backoff_is_capped() -> None:
    assert next_delay({**POLICY, "max_attempts": 10}, 8, None) == 5.0


def test_retry_after_wins_when_longer() -> None:
    assert next_delay(POLICY, 1, 30.0) == 30.0
    assert next_delay(POLICY, 3, 0.5) == 4.0


def test_defaults_apply_to_an_empty_policy() -> None:
    assert next_delay({}, 1, None) == 1.0
    assert next_delay({}, 5, None) is None


@given(st.integers(1, 60), st.one_of(st.none(), st.floats(0, 3600)))
def test_delay_is_never_negative(attempt: int, retry_after: float | None) -> None:
    delay = next_delay({**POLICY, "max_attempts": 100}, attempt, retry_after)
    assert delay is not None and delay >= 0
