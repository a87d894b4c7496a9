"""Bounded JSON: parse untrusted bytes only up to a nesting depth, encode without failing.

orjson parses up to 1,024 levels but refuses to encode more than ~254, and every recursive
walk in Python (or PostgreSQL) has its own ceiling. A body that parses but cannot be stored,
sanitised or shown again would stall whatever holds it, so untrusted JSON is measured before
it is parsed: `loads` refuses anything nested deeper than the configured limit. The scan is
iterative and costs two `bytes.count` calls for bodies with few brackets; otherwise it runs in
C-implemented steps (a regex, `bytes.translate`, itertools), about as fast as parsing.
"""

from __future__ import annotations

import operator
import re
from itertools import accumulate, count
from typing import Any

import orjson

DEFAULT_MAX_DEPTH = 128
"""Default for the `max_json_depth` setting (HOOKYARD_MAX_JSON_DEPTH)."""

ENCODE_MAX_DEPTH = 200
"""Containers nested deeper than this are replaced by `TOO_DEEP` when encoding must not fail
(orjson itself stops at ~254 levels)."""

TOO_DEEP = "[nested too deep to show]"

# A string (possibly unterminated: invalid JSON, but the scan must still end). The unrolled
# loop keeps the work inside the regex engine.
_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"?', re.DOTALL)
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")
# Openers weigh 2 and closers 0, so after i brackets depth = (sum of weights) - i.
_WEIGHTS = bytes.maketrans(b"[{]}", b"\x02\x02\x00\x00")


class JsonTooDeep(orjson.JSONDecodeError):
    """A document nests deeper than allowed; raised before anything is parsed.

    A subclass of `orjson.JSONDecodeError`, so callers that read non-JSON as text treat an
    over-deep body the same way.
    """

    def __init__(self, limit: int) -> None:
        super().__init__(f"nested deeper than {limit} levels", "", 0)
        self.limit = limit


def exceeds_depth(data: bytes, limit: int) -> bool:
    """True if brackets outside strings nest deeper than `limit` anywhere in `data`.

    Exact for valid JSON; total (never raises, never recurses) for any bytes.
    """
    # Nesting can never exceed the number of opening brackets, which C counts quickly.
    if data.count(b"[") + data.count(b"{") <= limit:
        return False
    # Drop strings, then everything but brackets; the running depth is computed by C
    # iterators (accumulate, map, count), never by a Python loop per byte or a recursion.
    outside_strings = _STRING.sub(b"", data) if b'"' in data else data
    brackets = outside_strings.translate(None, _NOT_BRACKETS)
    depths = map(operator.sub, accumulate(brackets.translate(_WEIGHTS)), count(1))
    return max(depths, default=0) > limit


def loads(data: bytes, max_depth: int) -> Any:
    """`orjson.loads`, refusing documents nested deeper than `max_depth` with `JsonTooDeep`.

    Raises `orjson.JSONDecodeError` (of which `JsonTooDeep` is a subclass) for anything that
    is not JSON within the limit.
    """
    if exceeds_depth(data, max_depth):
        raise JsonTooDeep(max_depth)
    return orjson.loads(data)


def clip_depth(value: Any, max_depth: int = ENCODE_MAX_DEPTH) -> Any:
    """A copy of a JSON-like value with containers deeper than `max_depth` replaced by `TOO_DEEP`.

    Iterative, so it is safe for values of any depth. Dicts, lists and tuples are copied
    (tuples as lists); every other value is kept as it is.
    """
    if not isinstance(value, dict | list | tuple):
        return value
    root: dict[Any, Any] | list[Any] = {} if isinstance(value, dict) else []
    stack: list[tuple[Any, dict[Any, Any] | list[Any], int]] = [(value, root, 1)]
    while stack:
        source, target, depth = stack.pop()
        items = source.items() if isinstance(source, dict) else enumerate(source)
        for key, item in items:
            if isinstance(item, dict | list | tuple):
                if depth >= max_depth:
                    copy: Any = TOO_DEEP
                else:
                    copy = {} if isinstance(item, dict) else []
                    stack.append((item, copy, depth + 1))
            else:
                copy = item
            if isinstance(target, dict):
                target[key] = copy
            else:
                target.append(copy)
    return root


def dumps_bounded(value: Any, **options: Any) -> bytes:
    """`orjson.dumps` that cannot fail on depth: an over-deep value is clipped and encoded again.

    `options` are passed to `orjson.dumps` (e.g. `default`, `option`). Other encoding errors
    (an unsupported type) still raise `orjson.JSONEncodeError`.
    """
    try:
        return orjson.dumps(value, **options)
    except orjson.JSONEncodeError:
        clipped = clip_depth(value)
        if clipped is value:
            raise
        return orjson.dumps(clipped, **options)
