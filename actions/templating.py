"""Fill action configuration from trigger data with ``{{ path }}`` expressions.

An expression is a path (see ``schemas.paths``), optionally followed by one filter::

    {{ trigger.body.order.id }}
    {{trigger.headers.x-github-event}}
    {{ trigger.body.name | default("friend") }}

``default`` takes one JSON literal (string, number, ``true``, ``false`` or ``null``) and is
used only when the path is missing; a present ``null`` is kept. That is the whole language:
no other filters, no calls, no attribute access and nothing is ever evaluated as code.
Substituted values are never rendered again, so data cannot inject expressions.

A string that is exactly one expression becomes the value itself, keeping numbers, objects
and lists intact for JSON bodies. Inside longer text, strings are inserted as they are,
numbers as ``str()`` writes them and everything else as compact JSON. There is no escape for
a literal ``{{``.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from schemas.paths import PathError, PathNotFound, Segment, parse_path, resolve

_OPEN = "{{"
_CLOSE = "}}"
_SHOWN_CHARS = 40
_UNDECODABLE = object()

_SPACE = re.compile(r"\s*")
# Loose on purpose: it only finds where the path ends (quoted keys may hold "}}" or "|");
# parse_path then decides whether the path is valid.
_PATH = re.compile(r"""(?:[A-Za-z0-9_.-]|\[(?:"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|[^\]"']*)\])+""", re.DOTALL)
_FILTER_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_JSON_LITERAL = re.compile(
    r"""
    "(?:[^"\\\x00-\x1f]|\\["\\/bfnrt]|\\u[0-9a-fA-F]{4})*"
    | (?P<integer>-?(?:0|[1-9][0-9]*))(?P<real>(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?)
    | true | false | null
    """,
    re.VERBOSE,
)


class TemplateError(ValueError):
    """A template is malformed or refers to missing data; the message names field and path."""


@dataclass(frozen=True, slots=True)
class _Expression:
    path: str
    segments: tuple[Segment, ...]
    has_default: bool = False
    default: object = None


_Part = str | _Expression


def render(template: object, context: Mapping[str, Any], *, field: str = "") -> object:
    """Return ``template`` with every ``{{ path }}`` in its strings filled from ``context``.

    Dicts and lists are walked (keys are left alone) and rebuilt; other values are returned
    unchanged. A whole-expression string returns the context's own object, not a copy.
    ``field`` prefixes error messages and grows as the walk descends, e.g.
    ``headers.X-Order``. Raises ``TemplateError`` for a malformed expression or a path that
    is missing and has no default. The walk is iterative (an explicit stack) and in document
    order, so the first error raised is the first in the template, at any depth.
    """
    if not isinstance(template, Mapping | list | tuple):
        return _render_string(template, context, field) if isinstance(template, str) else template
    root: dict[Any, Any] | list[Any] = {} if isinstance(template, Mapping) else []
    stack = [(_entries(template, field), root)]
    while stack:
        entries, target = stack[-1]
        for key, where, item in entries:
            if isinstance(item, Mapping | list | tuple):
                child: dict[Any, Any] | list[Any] = {} if isinstance(item, Mapping) else []
                _put(target, key, child)
                stack.append((_entries(item, where), child))
                break  # finish the child first: document order
            _put(target, key, _render_string(item, context, where) if isinstance(item, str) else item)
        else:
            stack.pop()
    return root


def _entries(container: Mapping[Any, Any] | list[Any] | tuple[Any, ...], field: str) -> Iterator[tuple[Any, str, Any]]:
    """(key or None for list items, field name, value) for each child, in order."""
    if isinstance(container, Mapping):
        return ((key, _child(field, str(key)), value) for key, value in container.items())
    return ((None, f"{field}[{index}]", item) for index, item in enumerate(container))


def _put(target: dict[Any, Any] | list[Any], key: Any, value: object) -> None:
    if isinstance(target, dict):
        target[key] = value
    else:
        target.append(value)


def find_paths(template: object, *, field: str = "") -> list[str]:
    """Return each distinct path used by an expression in ``template``, in order of appearance.

    Used to check templates when a workflow is saved; raises ``TemplateError`` as ``render``
    would for a malformed expression.
    """
    found: dict[str, None] = {}
    for part in _walk_parts(template, field):
        if isinstance(part, _Expression):
            found.setdefault(part.path)
    return list(found)


def _walk_parts(template: object, field: str) -> list[_Part]:
    if isinstance(template, str):
        return list(_compile_at(template, field))
    if isinstance(template, Mapping):
        children = [(_child(field, str(key)), value) for key, value in template.items()]
    elif isinstance(template, list | tuple):
        children = [(f"{field}[{index}]", item) for index, item in enumerate(template)]
    else:
        return []
    return [part for where, child in children for part in _walk_parts(child, where)]


def _child(field: str, key: str) -> str:
    return f"{field}.{key}" if field else key


def _render_string(template: str, context: Mapping[str, Any], field: str) -> object:
    if _OPEN not in template:
        return template
    parts = _compile_at(template, field)
    if len(parts) == 1 and isinstance(parts[0], _Expression):
        return _value(parts[0], context, field)
    return "".join(part if isinstance(part, str) else _stringify(_value(part, context, field), field) for part in parts)


def _value(expression: _Expression, context: Mapping[str, Any], field: str) -> object:
    try:
        return resolve(context, expression.segments)
    except PathNotFound as exc:
        if expression.has_default:
            return expression.default
        # The path as written, so the message matches the template the user sees.
        message = str(PathNotFound(expression.path, exc.reason))
        raise TemplateError(_located(field, message)) from None


def _stringify(value: object, field: str) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    try:
        return orjson.dumps(value).decode()
    except TypeError as exc:
        message = f"cannot insert a {type(value).__name__} into text: {exc}"
        raise TemplateError(_located(field, message)) from None


def _compile_at(template: str, field: str) -> tuple[_Part, ...]:
    try:
        return _compile(template)
    except TemplateError as exc:
        raise TemplateError(_located(field, str(exc))) from None


@functools.lru_cache(maxsize=4096)
def _compile(template: str) -> tuple[_Part, ...]:
    """Split a template into literal text and expressions; cached as configs are reused."""
    parts: list[_Part] = []
    pos = 0
    while (start := template.find(_OPEN, pos)) != -1:
        if start > pos:
            parts.append(template[pos:start])
        expression, pos = _parse_expression(template, start)
        parts.append(expression)
    if pos < len(template):
        parts.append(template[pos:])
    return tuple(parts)


def _parse_expression(template: str, start: int) -> tuple[_Expression, int]:
    """Parse the expression opening at ``start``; return it and the index after its ``}}``."""
    pos = _skip_space(template, start + len(_OPEN))
    if template.startswith(_CLOSE, pos):
        raise _syntax(template, start, "empty expression")
    path_match = _PATH.match(template, pos)
    if path_match is None:
        raise _syntax(template, pos, "expected a path")
    path = path_match.group()
    try:
        segments = parse_path(path)
    except PathError as exc:
        raise TemplateError(f"invalid template {_snippet(template, 0)}: {exc}") from None
    pos = _skip_space(template, path_match.end())
    expression = _Expression(path, segments)
    if template.startswith("|", pos):
        expression, pos = _parse_filter(template, _skip_space(template, pos + 1), expression)
    if not template.startswith(_CLOSE, pos):
        if pos >= len(template):
            raise _syntax(template, start, "'{{' is never closed")
        raise _syntax(template, pos, f"unexpected {_snippet(template, pos)}, expected '}}}}'")
    return expression, pos + len(_CLOSE)


def _parse_filter(template: str, pos: int, expression: _Expression) -> tuple[_Expression, int]:
    name = _FILTER_NAME.match(template, pos)
    if name is None:
        raise _syntax(template, pos, "expected a filter name after '|'")
    if name.group() != "default":
        raise _syntax(template, pos, f"unknown filter {name.group()!r}; only 'default' exists")
    pos = _skip_space(template, name.end())
    if not template.startswith("(", pos):
        raise _syntax(template, pos, "default needs an argument: default(<JSON literal>)")
    pos = _skip_space(template, pos + 1)
    literal = _JSON_LITERAL.match(template, pos)
    if literal is None:
        raise _syntax(template, pos, "default takes one JSON string, number, true, false or null")
    default = _decode_literal(literal)
    if default is _UNDECODABLE:
        raise _syntax(template, pos, "default's argument cannot be decoded")
    pos = _skip_space(template, literal.end())
    if not template.startswith(")", pos):
        raise _syntax(template, pos, "expected ')' after the default value")
    with_default = _Expression(expression.path, expression.segments, True, default)
    return with_default, _skip_space(template, pos + 1)


def _decode_literal(literal: re.Match[str]) -> object:
    # Integers are read exactly: a JSON decoder may turn a long one into a float.
    try:
        if literal["integer"] is not None and not literal["real"]:
            return int(literal.group())
        return orjson.loads(literal.group())
    except ValueError:
        return _UNDECODABLE


def _skip_space(template: str, pos: int) -> int:
    match = _SPACE.match(template, pos)
    return pos if match is None else match.end()


def _syntax(template: str, pos: int, problem: str) -> TemplateError:
    return TemplateError(f"invalid template {_snippet(template, 0)}: {problem} at position {pos}")


def _snippet(template: str, pos: int) -> str:
    text = template[pos : pos + _SHOWN_CHARS]
    return repr(text) + ("..." if len(template) - pos > _SHOWN_CHARS else "")


def _located(field: str, message: str) -> str:
    return f"{field}: {message}" if field else message
