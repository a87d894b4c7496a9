"""How an action attempt can fail; the worker maps these to retry decisions.

ActionError
 ├── PermanentActionError   retrying cannot help (4xx, bad template, bad config)
 └── RetryableActionError   try again later; `retry_after_s` when the target said when
"""

from __future__ import annotations


class ActionError(Exception):
    """An action attempt failed; the message is shown to the owner, so it never holds secrets."""

    def __init__(self, message: str, *, result: dict[str, object] | None = None) -> None:
        super().__init__(message)
        self.result = result


class PermanentActionError(ActionError):
    """Do not retry."""


class RetryableActionError(ActionError):
    """Retry, after `retry_after_s` seconds if the target asked for a delay."""

    def __init__(
        self, message: str, *, retry_after_s: float | None = None, result: dict[str, object] | None = None
    ) -> None:
        super().__init__(message, result=result)
        self.retry_after_s = retry_after_s
