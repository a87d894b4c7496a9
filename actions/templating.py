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

Configs are owners' input and trigger data is senders': both are walked iteratively and at
most ``MAX_TEMPLATE_DEPTH`` deep, and what one request renders is capped by a
``RenderBudget`` that stops before building anything past it.
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

DEFAULT_MAX_RENDERED_BYTES = 1024 * 1024
"""Default output budget of one action request (``HOOKYARD_MAX_RENDERED_BYTES``)."""
MAX_TEMPLATE_DEPTH = 64
"""How deep dicts and lists in a template may nest; configs are walked this far and no further."""

_CONTROL = re.compile(r"[\x00-\x1f]")

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

    def __init__(self, message: str, field: str = "") -> None:
        super().__init__(_located(field, message))
        # Where in the config, e.g. ``body.items[1]`` (empty when not known).
        self.field = field


class RenderLimitExceeded(TemplateError):
    """Filling the templates of one request would produce more than its byte budget."""


class RenderBudget:
    """How many bytes the templates of one action request may still produce.

    Sizes are counted as JSON would encode the output (quotes, escapes, separators), so an
    object inserted whole costs what its encoding will. Share one budget across every field of
    a request; rendering stops at the first piece that does not fit, before building it.
    """

    __slots__ = ("limit", "remaining")

    def __init__(self, limit: int = DEFAULT_MAX_RENDERED_BYTES) -> None:
        self.limit = limit
        self.remaining = limit

    def require(self, size: int, field: str) -> None:
        """Raise `RenderLimitExceeded` if `size` more bytes would not fit."""
        if size > self.remaining:
            message = f"rendered output exceeds {self.limit} bytes (max_rendered_bytes); rendering stopped"
            raise RenderLimitExceeded(message, field)

    def spend(self, size: int, field: str) -> None:
        """Count `size` bytes of output, raising `RenderLimitExceeded` past the limit."""
        self.require(size, field)
        self.remaining -= size


@dataclass(frozen=True, slots=True)
class _Expression:
    path: str
    segments: tuple[Segment, ...]
    has_default: bool = False
    default: object = None


_Part = str | _Expression


def render(
    template: object, context: Mapping[str, Any], *, field: str = "", budget: RenderBudget | None = None
) -> object:
    """Return ``template`` with every ``{{ path }}`` in its strings filled from ``context``.

    Dicts and lists are walked (iteratively, at most ``MAX_TEMPLATE_DEPTH`` deep; keys are left
    alone) and rebuilt; other values are returned unchanged. A whole-expression string returns
    the context's own object, not a copy. ``field`` prefixes error messages and grows as the
    walk descends, e.g. ``headers.X-Order``. Output counts against ``budget`` (a fresh
    default-sized one if not given). Raises ``TemplateError`` for a malformed expression, a
    path that is missing and has no default, or nesting past the limit, and its subclass
    ``RenderLimitExceeded`` as soon as the output would outgrow the budget.
    """
    budget = RenderBudget() if budget is None else budget
    root: list[object] = [None]
    stack: list[tuple[Any, Any, object, str, int]] = [(root, 0, template, field, 0)]
    while stack:
        target, slot, node, where, depth = stack.pop()
        if isinstance(node, str):
            target[slot] = _render_string(node, context, where, budget)
            continue
        children = _children(node, where)
        if children is None:
            budget.spend(_json_size(node, budget.remaining), where)
            target[slot] = node
            continue
        if depth >= MAX_TEMPLATE_DEPTH:
            raise TemplateError(f"nested more than {MAX_TEMPLATE_DEPTH} levels deep", where)
        out: Any
        if isinstance(node, Mapping):
            out = dict.fromkeys(key for key, _, _ in children)
            keys = sum(_string_size(str(key)) + 1 for key in out)
            budget.spend(2 + max(len(out) - 1, 0) + keys, where)
        else:
            out = [None] * len(children)
            budget.spend(2 + max(len(out) - 1, 0), where)
        target[slot] = out
        stack.extend((out, key, value, child_field, depth + 1) for key, value, child_field in reversed(children))
    return root[0]


def find_paths(template: object, *, field: str = "") -> list[str]:
    """Return each distinct path used by an expression in ``template``, in order of appearance.

    Raises ``TemplateError`` as ``render`` would for a malformed expression or nesting past
    ``MAX_TEMPLATE_DEPTH``.
    """
    found: dict[str, None] = {}
    for where, text in _strings(template, field):
        if _OPEN in text:
            for part in _compile_at(text, where):
                if isinstance(part, _Expression):
                    found.setdefault(part.path)
    return list(found)


def check_templates(template: object, *, field: str = "") -> None:
    """Parse every templated string in ``template`` (e.g. an action config being saved).

    Raises ``TemplateError`` naming the field and the position of the first malformed
    expression, or the field nested past ``MAX_TEMPLATE_DEPTH``.
    """
    for where, text in _strings(template, field):
        if _OPEN in text:
            _compile_at(text, where)


def _strings(template: object, field: str) -> Iterator[tuple[str, str]]:
    """Every string in ``template`` with its field, in document order, walked iteratively."""
    stack: list[tuple[object, str, int]] = [(template, field, 0)]
    while stack:
        node, where, depth = stack.pop()
        if isinstance(node, str):
            yield where, node
            continue
        children = _children(node, where)
        if children is None:
            continue
        if depth >= MAX_TEMPLATE_DEPTH:
            raise TemplateError(f"nested more than {MAX_TEMPLATE_DEPTH} levels deep", where)
        stack.extend((value, child_field, depth + 1) for _, value, child_field in reversed(children))


def _children(node: object, field: str) -> list[tuple[Any, object, str]] | None:
    """(key, value, field) of a dict's or list's items; None for anything else."""
    if isinstance(node, Mapping):
        return [(key, value, _child(field, str(key))) for key, value in node.items()]
    if isinstance(node, list | tuple):
        return [(index, item, f"{field}[{index}]") for index, item in enumerate(node)]
    return None


def _child(field: str, key: str) -> str:
    return f"{field}.{key}" if field else key


def _render_string(template: str, context: Mapping[str, Any], field: str, budget: RenderBudget) -> object:
    if _OPEN not in template:
        budget.spend(_string_size(template), field)
        return template
    parts = _compile_at(template, field)
    if len(parts) == 1 and isinstance(parts[0], _Expression):
        value = _value(parts[0], context, field)
        budget.spend(_json_size(value, budget.remaining), field)
        return value
    budget.spend(2, field)  # the quotes around the finished string
    pieces: list[str] = []
    for part in parts:
        if isinstance(part, _Expression):
            value = _value(part, context, field)
            if not isinstance(value, str):
                # Measured before encoding, so a huge object is never encoded just to be refused.
                budget.require(_json_size(value, budget.remaining), field)
                value = _stringify(value, field)
            part = value
        budget.spend(_string_size(part) - 2, field)
        pieces.append(part)
    return "".join(pieces)


def _string_size(text: str) -> int:
    """Bytes of ``text`` as a JSON string: UTF-8, quotes and escapes (an upper bound for these)."""
    size = len(text) if text.isascii() else len(text.encode("utf-8", "surrogatepass"))
    escaped = text.count('"') + text.count("\\")
    controls = sum(1 for _ in _CONTROL.finditer(text))
    return size + 2 + escaped + 5 * controls


def _json_size(value: object, cap: int) -> int:
    """The size of ``value`` encoded as JSON, walked iteratively; stops once past ``cap``."""
    total = 0
    stack = [value]
    while stack and total <= cap:
        node = stack.pop()
        if isinstance(node, str):
            total += _string_size(node)
        elif isinstance(node, Mapping):
            total += 1 + max(len(node), 1)  # braces and commas
            for key, child in node.items():
                total += _string_size(str(key)) + 1
                stack.append(child)
                if total > cap:
                    break
        elif isinstance(node, list | tuple):
            total += 1 + max(len(node), 1)
            if total <= cap:
                stack.extend(node)
        elif node is None or node is True:
            total += 4
        elif node is False:
            total += 5
        elif isinstance(node, int):
            total += node.bit_length() * 3 // 10 + 2  # decimal digits and sign, near enough
        elif isinstance(node, float):
            total += len(repr(node))
        else:
            total += len(type(node).__name__)
    return total


def _value(expression: _Expression, context: Mapping[str, Any], field: str) -> object:
    try:
        return resolve(context, expression.segments)
    except PathNotFound as exc:
        if expression.has_default:
            return expression.default
        # The path as written, so the message matches the template the user sees.
        message = str(PathNotFound(expression.path, exc.reason))
        raise TemplateError(message, field) from None


def _stringify(value: object, field: str) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    try:
        return orjson.dumps(value).decode()
    except TypeError as exc:
        message = f"cannot insert a {type(value).__name__} into text: {exc}"
        raise TemplateError(message, field) from None


def _compile_at(template: str, field: str) -> tuple[_Part, ...]:
    try:
        return _compile(template)
    except TemplateError as exc:
        raise TemplateError(str(exc), field) from None


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
        raise TemplateError(f"invalid template {_snippet(template, 0)}: {exc} (path at position {pos})") from None
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
