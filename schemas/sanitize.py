"""Make untrusted values storable: PostgreSQL rejects NUL in `text` and `jsonb`.

Both walks are iterative (an explicit stack), so no value, however deep, can exhaust Python's
recursion limit in the process that handles it.
"""

from __future__ import annotations

import re
from typing import Any

from schemas.jsonlimits import ENCODE_MAX_DEPTH, TOO_DEEP

REPLACEMENT = "\ufffd"
_SURROGATE = re.compile("[\ud800-\udfff]")


def _clean(value: str) -> str:
    # isascii is a flag check; only non-ASCII text pays for the encode that finds surrogates.
    if not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            value = _SURROGATE.sub(REPLACEMENT, value)
    return value.replace("\x00", REPLACEMENT) if "\x00" in value else value


def strip_nul(value: Any, max_depth: int = ENCODE_MAX_DEPTH) -> Any:
    """The same JSON-like value, storable: NUL characters (in keys and strings) become U+FFFD,
    and so do lone surrogates, which no UTF-8 encoder (PostgreSQL's, orjson's) accepts.

    Containers nested deeper than `max_depth` become the placeholder `TOO_DEEP`, so the
    result always encodes as JSON (orjson refuses ~254 levels). Dicts and lists are copied;
    other values are returned as they are.
    """
    if isinstance(value, str):
        return _clean(value)
    if not isinstance(value, dict | list):
        return value
    root: dict[Any, Any] | list[Any] = {} if isinstance(value, dict) else []
    stack: list[tuple[dict[Any, Any] | list[Any], dict[Any, Any] | list[Any], int]] = [(value, root, 1)]
    while stack:
        source, target, depth = stack.pop()
        if isinstance(source, dict):
            assert isinstance(target, dict)
            for key, item in source.items():
                target[_clean(key) if isinstance(key, str) else key] = _copy(item, depth, max_depth, stack)
        else:
            assert isinstance(target, list)
            target.extend([_copy(item, depth, max_depth, stack) for item in source])
    return root


def _copy(item: Any, depth: int, max_depth: int, stack: list[Any]) -> Any:
    """A cleaned scalar, or an empty container queued on `stack` to be filled later."""
    if isinstance(item, str):
        return _clean(item)
    if isinstance(item, dict | list):
        if depth >= max_depth:
            return TOO_DEEP
        child: dict[Any, Any] | list[Any] = {} if isinstance(item, dict) else []
        stack.append((item, child, depth + 1))
        return child
    return item


def has_nul(value: Any) -> bool:
    """True if any string or key in a JSON-like value contains NUL."""
    stack = [value]
    while stack:
        node = stack.pop()
        if isinstance(node, str):
            if "\x00" in node:
                return True
        elif isinstance(node, dict):
            for key, item in node.items():
                if isinstance(key, str) and "\x00" in key:
                    return True
                stack.append(item)
        elif isinstance(node, list):
            stack.extend(node)
    return False
