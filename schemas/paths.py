"""Dotted paths into event data, shared by trigger filters and action templates.

Grammar::

    path     := first rest*
    first    := name | bracket
    rest     := "." name | bracket
    name     := [A-Za-z0-9_-]+            -> int if a plain decimal, else str
    bracket  := "[" index "]"             -> int (no sign, no leading zeros)
              | "[" '"' chars '"' "]"     -> str; backslash escapes the next character
              | "[" "'" chars "'" "]"

So ``body.items[0].sku``, ``body.items.0.sku`` and ``headers.x-github-event`` are all paths,
and ``body["odd.key"]`` reaches a key that contains a dot. Whitespace is never part of a path.

``resolve`` walks mappings by string key and lists by non-negative index. An integer segment
on a mapping looks up its decimal string, so ``body.0`` reaches ``{"0": ...}``.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping

Segment = str | int

# Wide enough for any list index, short enough that int() never hits its digit limit.
_MAX_INDEX_DIGITS = 18
_SHOWN_PATH_CHARS = 80

_NAME = re.compile(r"[A-Za-z0-9_-]+")
_INDEX = re.compile(r"\[(0|[1-9][0-9]*)\]")
_QUOTED = re.compile(r"""\[(?:"((?:[^"\\]|\\.)*)"|'((?:[^'\\]|\\.)*)')\]""", re.DOTALL)
_ESCAPE = re.compile(r"\\(.)", re.DOTALL)
_CANONICAL_INT = re.compile(r"0|[1-9][0-9]*")

_SEGMENT_PATTERN = r"""(?:\[(?:0|[1-9][0-9]{0,17})\]|\["(?:[^"\\]|\\[\s\S])*"\]|\['(?:[^'\\]|\\[\s\S])*'\])"""
# ECMA-262 and Python agree on this pattern. The trailing lookahead is a true end of input:
# "$" would also match before a final newline in Python.
PATH_PATTERN = rf"^(?:[A-Za-z0-9_-]+|{_SEGMENT_PATTERN})(?:\.[A-Za-z0-9_-]+|{_SEGMENT_PATTERN})*(?![\s\S])"
"""A JSON Schema ``pattern`` accepting exactly the strings ``parse_path`` accepts."""


class PathError(ValueError):
    """A path is not syntactically valid; the message says where."""


class PathNotFound(LookupError):
    """A well-formed path does not lead to a value in the data it was resolved against."""

    def __init__(self, path: str, reason: str) -> None:
        # Both arguments stay in args so the exception survives pickling.
        super().__init__(path, reason)
        self.path = path
        self.reason = reason

    def __str__(self) -> str:
        return f"path {_shown(self.path)} not found ({self.reason})"


@functools.lru_cache(maxsize=4096)
def parse_path(path: str) -> tuple[Segment, ...]:
    """Split a path: ``"body.items[0].sku"`` -> ``("body", "items", 0, "sku")``.

    Results are cached because the same few paths are evaluated for every event.
    Raises ``PathError`` if ``path`` is empty or malformed.
    """
    if not isinstance(path, str):
        raise PathError(f"path must be a string, not {type(path).__name__}")
    if not path:
        raise PathError("path is empty")
    segments: list[Segment] = []
    pos = 0 if path[0] == "[" else _read_name(path, 0, segments)
    while pos < len(path):
        if path[pos] == ".":
            pos = _read_name(path, pos + 1, segments)
        elif path[pos] == "[":
            pos = _read_bracket(path, pos, segments)
        else:
            raise _syntax(path, pos, f"unexpected {path[pos]!r}")
    return tuple(segments)


def format_path(segments: tuple[Segment, ...]) -> str:
    """Write ``segments`` as a path string that ``parse_path`` turns back into ``segments``."""
    if not segments:
        raise PathError("path is empty")
    parts: list[str] = []
    for segment in segments:
        if isinstance(segment, bool) or not isinstance(segment, int | str):
            raise PathError(f"path segment {segment!r} is not a key or an index")
        if isinstance(segment, int):
            if segment < 0:
                raise PathError(f"path index {segment} is negative")
            parts.append(f"[{segment}]")
        elif _NAME.fullmatch(segment) and isinstance(_name_segment(segment), str):
            parts.append(f".{segment}" if parts else segment)
        else:
            escaped = segment.replace("\\", "\\\\").replace('"', '\\"')
            parts.append(f'["{escaped}"]')
    return "".join(parts)


def resolve(data: object, path: str | tuple[Segment, ...]) -> object:
    """Return the value at ``path`` inside ``data``.

    ``path`` is a path string or the tuple ``parse_path`` makes of one. Raises ``PathError``
    for a malformed path and ``PathNotFound`` when a key or index is absent, or when the walk
    reaches a value that is neither a mapping nor a list.
    """
    segments = parse_path(path) if isinstance(path, str) else path
    if not segments:
        raise PathError("path is empty")
    node = data
    for depth, segment in enumerate(segments):
        found, node = _step(node, segment)
        if not found:
            shown = path if isinstance(path, str) else _display(segments)
            raise PathNotFound(shown, _missing_reason(node, segments, depth))
    return node


def _step(node: object, segment: Segment) -> tuple[bool, object]:
    """Take one step; on failure return the node that could not be stepped into."""
    # Event data is plain dicts; testing the exact type first skips the slower ABC check.
    if type(node) is dict or isinstance(node, Mapping):
        key = segment if isinstance(segment, str) else str(segment)
        if key in node:
            return True, node[key]
        return False, node
    if isinstance(node, list | tuple) and type(segment) is int and 0 <= segment < len(node):
        return True, node[segment]
    return False, node


def _missing_reason(node: object, segments: tuple[Segment, ...], depth: int) -> str:
    segment = segments[depth]
    if isinstance(node, Mapping):
        return f"no key {str(segment)!r}"
    if isinstance(node, list | tuple):
        if isinstance(segment, str):
            return f"{_where(segments, depth)} is a list, so {segment!r} is not an index"
        count = len(node)
        return f"no index {segment}; the list has {count} item{'' if count == 1 else 's'}"
    what = f"{_where(segments, depth)} is {json_type(node)}"
    return f"{what}, so it has no {'index' if isinstance(segment, int) else 'key'} {segment!r}"


def _where(segments: tuple[Segment, ...], depth: int) -> str:
    return repr(_display(segments[:depth])) if depth else "the data"


def _display(segments: tuple[Segment, ...]) -> str:
    # Segments built by hand may hold what no path string can, such as a negative index.
    try:
        return format_path(segments)
    except PathError:
        return repr(segments)


def json_type(value: object) -> str:
    """How a value reads in an error message: "a string", "an object", "null"..."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, Mapping):
        return "an object"
    if isinstance(value, list | tuple):
        return "a list"
    return f"a {type(value).__name__}"


def _read_name(path: str, pos: int, segments: list[Segment]) -> int:
    match = _NAME.match(path, pos)
    if match is None:
        raise _syntax(path, pos, "expected a key")
    segments.append(_name_segment(match.group()))
    return match.end()


def _read_bracket(path: str, pos: int, segments: list[Segment]) -> int:
    index = _INDEX.match(path, pos)
    if index is not None:
        if len(index.group(1)) > _MAX_INDEX_DIGITS:
            raise _syntax(path, pos, "index is too large")
        segments.append(int(index.group(1)))
        return index.end()
    quoted = _QUOTED.match(path, pos)
    if quoted is None and path.startswith("[-", pos):
        raise _syntax(path, pos, "negative indexes are not allowed")
    if quoted is None:
        raise _syntax(path, pos, "expected [index], [\"key\"] or ['key']")
    raw = quoted.group(1) if quoted.group(1) is not None else quoted.group(2)
    segments.append(_ESCAPE.sub(r"\1", raw))
    return quoted.end()


def _name_segment(name: str) -> Segment:
    """A bare name is an index when it is a plain decimal that fits one."""
    if len(name) <= _MAX_INDEX_DIGITS and _CANONICAL_INT.fullmatch(name):
        return int(name)
    return name


def _syntax(path: str, pos: int, problem: str) -> PathError:
    return PathError(f"invalid path {_shown(path)}: {problem} at position {pos}")


def _shown(path: str) -> str:
    if len(path) <= _SHOWN_PATH_CHARS:
        return repr(path)
    return repr(path[:_SHOWN_PATH_CHARS]) + "..."
