"""Make untrusted values storable: PostgreSQL rejects NUL in `text` and `jsonb`."""

from __future__ import annotations

from typing import Any

REPLACEMENT = "\ufffd"


def strip_nul(value: Any) -> Any:
    """The same JSON-like value with every NUL character (in keys and strings) replaced by U+FFFD."""
    if isinstance(value, str):
        return value.replace("\x00", REPLACEMENT) if "\x00" in value else value
    if isinstance(value, dict):
        return {strip_nul(k): strip_nul(v) for k, v in value.items()}
    if isinstance(value, list):
        return [strip_nul(v) for v in value]
    return value


def has_nul(value: Any) -> bool:
    """True if any string or key in a JSON-like value contains NUL."""
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(has_nul(k) or has_nul(v) for k, v in value.items())
    if isinstance(value, list):
        return any(has_nul(v) for v in value)
    return False
