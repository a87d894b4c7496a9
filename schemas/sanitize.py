"""Make untrusted values storable: PostgreSQL rejects NUL in `text` and `jsonb`."""

from __future__ import annotations

import re
from typing import Any

REPLACEMENT = "\ufffd"
_SURROGATE = re.compile("[\ud800-\udfff]")


def strip_nul(value: Any) -> Any:
    """The same JSON-like value, storable: NUL characters (in keys and strings) become U+FFFD,
    and so do lone surrogates, which no UTF-8 encoder (PostgreSQL's, orjson's) accepts."""
    if isinstance(value, str):
        # isascii is a flag check; only non-ASCII text pays for the encode that finds surrogates.
        if not value.isascii():
            try:
                value.encode("utf-8")
            except UnicodeEncodeError:
                value = _SURROGATE.sub(REPLACEMENT, value)
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
