"""Per-execution retry decisions from a workflow's retry policy."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

DEFAULT_POLICY = {"max_attempts": 5, "initial_interval_s": 1.0, "backoff": 2.0, "max_interval_s": 300.0}


def next_delay(policy: Mapping[str, Any], attempt: int, retry_after_s: float | None) -> float | None:
    """Seconds until the next attempt after `attempt` failed, or None when attempts are used up.

    A policy may give the delays as a list (`delays_s`, the last one repeating) instead of a
    backoff. A target's Retry-After wins when it asks for longer than the backoff would wait.
    """
    merged = {**DEFAULT_POLICY, **policy}
    if attempt >= int(merged["max_attempts"]):
        return None
    delays = merged.get("delays_s")
    if delays:  # a fixed schedule (subscription deliveries), its last delay repeating
        delay = float(delays[min(attempt, len(delays)) - 1])
    else:
        backoff = float(merged["initial_interval_s"]) * float(merged["backoff"]) ** (attempt - 1)
        delay = min(backoff, float(merged["max_interval_s"]))
    if retry_after_s is not None:
        delay = max(delay, retry_after_s)
    return delay
