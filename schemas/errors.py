"""The persistence layer's own errors; ingest maps each once to an HTTP response.

NotFound    the row does not exist or belongs to another owner (never which of the two)
"""

from __future__ import annotations


class NotFound(LookupError):
    """No such row for this owner; the message names the kind ("no such endpoint")."""

    def __init__(self, kind: str) -> None:
        super().__init__(f"no such {kind}")
        self.kind = kind
