"""Trigger filters: a small condition tree tested against an event's data.

A node is one of::

    {"all": [node, ...]}        every child matches (at least one child)
    {"any": [node, ...]}        some child matches (at least one child)
    {"not": node}               the child does not match
    {"path": "body.action", "op": "equals", "value": "opened"}

Operators: ``equals``, ``not_equals``, ``in``, ``not_in`` (value is a list), ``exists``,
``not_exists`` (no value), ``contains`` (substring of a string, or element of a list),
``starts_with``, ``ends_with`` (strings), ``gt``, ``gte``, ``lt``, ``lte`` (numbers).
There is deliberately no regular-expression operator: a filter must not be able to make
matching slow.

Equality is JSON equality: ``1`` equals ``1.0``, but ``"1"`` is not ``1`` and ``true`` is not
``1``. Numeric operators need a number on both sides; a boolean is not a number, and a
numeric string in the data such as ``"12.5"`` is read as a number.

A path missing from the data makes every operator false except ``exists`` and
``not_exists``, which test exactly that. This includes ``not_equals`` and ``not_in``: a
condition about a value says nothing about a value that is not there. A present ``null``
counts as existing.

``validate_filter`` is run once when a workflow is saved; ``evaluate`` trusts its input and
runs for every event and candidate workflow. ``FILTER_SCHEMA`` describes the same shape for
documentation and API validation, but only ``validate_filter`` enforces the limits of
``MAX_DEPTH`` levels and ``MAX_CONDITIONS`` conditions.
"""

from __future__ import annotations

import copy
import itertools
import math
import operator
import re
import reprlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from schemas.paths import PATH_PATTERN, PathError, PathNotFound, json_type, parse_path, resolve

MAX_DEPTH = 8
MAX_CONDITIONS = 100

GROUP_KEYS = ("all", "any", "not")
PRESENCE_OPS = ("exists", "not_exists")
LIST_OPS = ("in", "not_in")
STRING_OPS = ("starts_with", "ends_with")
NUMERIC_OPS = ("gt", "gte", "lt", "lte")
OPS = ("equals", "not_equals", *LIST_OPS, *PRESENCE_OPS, "contains", *STRING_OPS, *NUMERIC_OPS)

_MAX_REASON_CHARS = 200
_SHOWN_VALUE_CHARS = 50
_SHOWN_PATH_CHARS = 60
_SHOWN_ITEMS = 4
# Long enough for any number a sender means; short enough that int() never refuses it.
_MAX_NUMERIC_STRING_CHARS = 64
_ANCHOR = "hookyard-filter-node"
# Stricter than float(): no "nan", "inf", "1_000", surrounding spaces or non-ASCII digits.
_JSON_NUMBER = re.compile(r"-?(?:0|[1-9][0-9]*)(?P<fraction>\.[0-9]+)?(?P<exponent>[eE][+-]?[0-9]+)?")
_MISSING = object()


class FilterError(ValueError):
    """A filter is not valid; the message names the offending location."""


def _build_schema() -> dict[str, Any]:
    # Recursion goes through a plain-name anchor rather than "#/$defs/...": a JSON pointer is
    # relative to the document root, so it would break once this schema is embedded.
    node_ref = {"$ref": f"#{_ANCHOR}"}

    def group(key: str) -> dict[str, Any]:
        children = {"type": "array", "minItems": 1, "items": node_ref}
        return _object_with({key: children}, required=[key])

    def when(ops: tuple[str, ...], then: dict[str, Any]) -> dict[str, Any]:
        return {
            "if": {"properties": {"op": {"enum": list(ops)}}, "required": ["op"]},
            "then": then,
        }

    leaf = _object_with(
        {
            "path": {"type": "string", "pattern": PATH_PATTERN},
            "op": {"enum": list(OPS)},
            "value": {},
        },
        required=["path", "op"],
    )
    leaf["allOf"] = [
        when(PRESENCE_OPS, {"not": {"required": ["value"]}}) | {"else": {"required": ["value"]}},
        when(LIST_OPS, {"properties": {"value": {"type": "array"}}}),
        when(STRING_OPS, {"properties": {"value": {"type": "string"}}}),
        when(NUMERIC_OPS, {"properties": {"value": {"type": "number"}}}),
    ]
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$anchor": _ANCHOR,
        "title": "Trigger filter",
        "anyOf": [group("all"), group("any"), _object_with({"not": node_ref}, ["not"]), leaf],
    }


def _object_with(properties: dict[str, Any], required: list[str]) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": properties,
        "required": required,
        "additionalProperties": False,
    }


FILTER_SCHEMA: dict[str, Any] = _build_schema()
"""JSON Schema (draft 2020-12) for a filter node, as a standalone document."""


def filter_schema() -> dict[str, Any]:
    """Return a copy of ``FILTER_SCHEMA`` to embed as a subschema of another schema.

    ``$schema`` is dropped because it belongs only at the root of a schema resource. The
    recursion uses the anchor ``#hookyard-filter-node``, so embed the filter schema at most
    once per schema resource.
    """
    embedded = copy.deepcopy(FILTER_SCHEMA)
    del embedded["$schema"]
    return embedded


# --- validation -------------------------------------------------------------------------


@dataclass(slots=True)
class _Budget:
    conditions: int = 0


def validate_filter(node: object) -> None:
    """Raise ``FilterError`` unless ``node`` is a well-formed filter within the size limits.

    Messages start with the location of the problem, e.g.
    ``filter.all[1].op: 'bigger' is not one of equals, not_equals, ...``.
    """
    _check_node(node, "filter", 1, _Budget())


def _check_node(node: object, where: str, depth: int, budget: _Budget) -> None:
    if depth > MAX_DEPTH:
        raise FilterError(f"{where}: filters may nest at most {MAX_DEPTH} levels deep")
    if not isinstance(node, Mapping):
        raise FilterError(f"{where}: expected an object, got {json_type(node)}")
    groups = [key for key in GROUP_KEYS if key in node]
    if len(groups) > 1:
        raise FilterError(f"{where}: has both {groups[0]!r} and {groups[1]!r}; use one per node")
    if groups:
        _check_group(node, groups[0], where, depth, budget)
    elif "path" in node or "op" in node:
        _check_condition(node, where, budget)
    else:
        raise FilterError(f"{where}: expected 'all', 'any', 'not' or a condition with 'path' and 'op'")


def _check_group(node: Mapping[Any, Any], key: str, where: str, depth: int, budget: _Budget) -> None:
    _check_keys(node, {key}, where)
    if key == "not":
        _check_node(node["not"], f"{where}.not", depth + 1, budget)
        return
    children = node[key]
    if not isinstance(children, list):
        raise FilterError(f"{where}.{key}: expected a list, got {json_type(children)}")
    if not children:
        raise FilterError(f"{where}.{key}: must contain at least one condition")
    for index, child in enumerate(children):
        _check_node(child, f"{where}.{key}[{index}]", depth + 1, budget)


def _check_condition(node: Mapping[Any, Any], where: str, budget: _Budget) -> None:
    _check_keys(node, {"path", "op", "value"}, where)
    for key in ("path", "op"):
        if key not in node:
            raise FilterError(f"{where}: missing {key!r}")
    _check_path(node["path"], f"{where}.path")
    op = node["op"]
    if op not in OPS:
        raise FilterError(f"{where}.op: {_short(op)} is not one of {', '.join(OPS)}")
    _check_value(node, op, where)
    budget.conditions += 1
    if budget.conditions > MAX_CONDITIONS:
        raise FilterError(f"{where}: a filter may have at most {MAX_CONDITIONS} conditions")


def _check_keys(node: Mapping[Any, Any], allowed: set[str], where: str) -> None:
    for key in node:
        if key not in allowed:
            raise FilterError(f"{where}: unexpected key {_short(key)}")


def _check_path(path: object, where: str) -> None:
    if not isinstance(path, str):
        raise FilterError(f"{where}: expected a string, got {json_type(path)}")
    try:
        parse_path(path)
    except PathError as exc:
        raise FilterError(f"{where}: {exc}") from None


def _check_value(node: Mapping[Any, Any], op: str, where: str) -> None:
    if op in PRESENCE_OPS:
        if "value" in node:
            raise FilterError(f"{where}.value: not allowed with op {op!r}")
        return
    if "value" not in node:
        raise FilterError(f"{where}: op {op!r} needs a 'value'")
    value = node["value"]
    if op in LIST_OPS and not isinstance(value, list):
        raise FilterError(f"{where}.value: op {op!r} needs a list, got {json_type(value)}")
    if op in STRING_OPS and not isinstance(value, str):
        raise FilterError(f"{where}.value: op {op!r} needs a string, got {json_type(value)}")
    if op in NUMERIC_OPS and _filter_number(value) is None:
        raise FilterError(f"{where}.value: op {op!r} needs a number, got {json_type(value)}")


# --- evaluation -------------------------------------------------------------------------


# Not frozen: a frozen dataclass costs three times as much to build, and the dispatcher builds
# one per node evaluated for every candidate workflow of every event. Treat it as read-only.
@dataclass(slots=True)
class TraceStep:
    """One node of a filter (or one built-in check of a trigger) as it was evaluated.

    ``at`` locates the node in the trigger config (``filter.all[1]``, ``from``); ``kind`` is
    ``all``, ``any``, ``not``, ``condition``, or ``route`` (where the event came from, in dry
    runs). A condition carries its ``path``, ``op``, the ``expected`` value and the value
    ``seen`` in the data (both shortened; ``seen`` is None when the path is missing). A
    group carries how many of its children were ``skipped`` because the outcome was decided.
    """

    at: str
    kind: str
    matched: bool
    path: str | None = None
    op: str | None = None
    expected: object = None
    seen: object = None
    missing: bool = False
    skipped: int = 0

    def to_json(self) -> dict[str, Any]:
        """The JSON shape shown in event resolutions and dry runs."""
        out: dict[str, Any] = {"at": self.at, "kind": self.kind, "matched": self.matched}
        if self.kind in GROUP_KEYS:
            if self.skipped:
                out["skipped"] = self.skipped
            return out
        out |= {"path": self.path, "op": self.op, "expected": self.expected, "seen": self.seen}
        if self.missing:
            out["missing"] = True
        return out


@dataclass(frozen=True, slots=True)
class FilterOutcome:
    """Whether an event passed a filter, a short explanation why, and the steps evaluated."""

    matched: bool
    reason: str
    trace: tuple[TraceStep, ...] = ()
    # Steps beyond MAX_TRACE_STEPS were evaluated but not recorded.
    truncated: bool = False

    def trace_json(self) -> list[dict[str, Any]]:
        """The trace as JSON objects, in evaluation order."""
        return [step.to_json() for step in self.trace]


MAX_TRACE_STEPS = 64
"""Steps recorded per trace; a filter within MAX_CONDITIONS may evaluate more, which are counted
as `truncated` rather than stored with every event."""


def evaluate(node: Mapping[str, Any] | None, data: Mapping[str, Any]) -> FilterOutcome:
    """Test ``data`` against the filter ``node``; ``None`` means no filter and always matches.

    ``node`` must have passed ``validate_filter``: it is not checked again here, though a
    malformed node may still raise ``FilterError``. Data of any shape never raises. The
    outcome carries the trace of the nodes evaluated (``all`` stops at the first child that
    fails, ``any`` at the first that matches), each condition with the value it saw.
    """
    if node is None:
        return FilterOutcome(matched=True, reason="no filter")
    try:
        return trace(node, data)
    except (KeyError, TypeError, IndexError, PathError) as exc:
        raise FilterError(f"filter is not valid ({exc}); check it with validate_filter") from exc


# Why a node came out as it did, kept unformatted until the end: only the decisive chain is
# ever turned into text. ("condition", node, actual, matched) | ("not", inner) |
# ("all", count) | ("none", count, first).
_Why = tuple[Any, ...]


_PENDING = TraceStep("", "", False)  # the place of a group's step until its outcome is known


@dataclass(slots=True)
class _Frame:
    """A group whose children are being evaluated (the walk keeps its own stack)."""

    kind: str
    children: list[Mapping[str, Any]]
    at: str
    step: int | None
    index: int = 0
    first: _Why = ()


class _Recorder:
    """Trace steps, at most MAX_TRACE_STEPS of them."""

    def __init__(self) -> None:
        self.steps: list[TraceStep] = []
        self.truncated = False

    @property
    def full(self) -> bool:
        return len(self.steps) >= MAX_TRACE_STEPS

    def add(self, step: TraceStep) -> int | None:
        if self.full:
            self.truncated = True
            return None
        self.steps.append(step)
        return len(self.steps) - 1


def trace(node: Mapping[str, Any], data: Mapping[str, Any], *, at: str = "filter") -> FilterOutcome:
    """Evaluate a validated filter iteratively, recording each node evaluated.

    The one evaluator of filters: the dispatcher's resolution and dry runs both use it. The
    walk keeps its own stack (no recursion) and short-circuits like ``all()`` and ``any()``;
    the reason explains an ``all`` by its failing child, an ``any`` by its matching one.
    """
    recorder = _Recorder()
    stack: list[_Frame] = []
    pending: tuple[Mapping[str, Any], str] | None = (node, at)
    matched = False
    why: _Why = ()
    while True:
        if pending is not None:
            current, where = pending
            pending = None
            kind = "all" if "all" in current else "any" if "any" in current else "not" if "not" in current else ""
            if not kind:
                matched, why = _trace_condition(current, data, where, recorder)
            else:
                children = [current["not"]] if kind == "not" else list(current[kind])
                step = recorder.add(_PENDING)
                stack.append(_Frame(kind, children, where, step))
                pending = (children[0], _child_at(where, kind, 0))
                continue
        if not stack:
            break
        frame = stack[-1]
        if frame.index == 0:
            frame.first = why
        decided = (frame.kind == "all" and not matched) or (frame.kind == "any" and matched)
        if frame.kind != "not" and not decided and frame.index + 1 < len(frame.children):
            frame.index += 1
            pending = (frame.children[frame.index], _child_at(frame.at, frame.kind, frame.index))
            continue
        stack.pop()
        matched, why = _group_result(frame, matched, why)
        if frame.step is not None:
            skipped = len(frame.children) - frame.index - 1
            recorder.steps[frame.step] = TraceStep(frame.at, frame.kind, matched, skipped=skipped)
    return FilterOutcome(matched, _reason(why), tuple(recorder.steps), recorder.truncated)


def _child_at(where: str, kind: str, index: int) -> str:
    return f"{where}.not" if kind == "not" else f"{where}.{kind}[{index}]"


def _group_result(frame: _Frame, child_matched: bool, child: _Why) -> tuple[bool, _Why]:
    """A finished group's outcome from its last evaluated child (the decisive one)."""
    if frame.kind == "not":
        return not child_matched, ("not", child)
    count = len(frame.children)
    if count == 1:
        # A group of one is just its condition.
        return child_matched, child
    if frame.kind == "all":
        return child_matched, child if not child_matched else ("all", count)
    if child_matched:
        return True, child
    return False, ("none", count, frame.first)


def _reason(why: _Why) -> str:
    """The text of a chain of whys, unwrapped in a loop and cut at _MAX_REASON_CHARS."""
    prefix = ""
    closing = 0
    while len(prefix) < _MAX_REASON_CHARS:
        if why[0] == "not":
            prefix += "not ("
            closing += 1
            why = why[1]
        elif why[0] == "none":
            prefix += f"none of {why[1]} conditions matched; first: "
            why = why[2]
        elif why[0] == "all":
            return _clip(f"{prefix}all {why[1]} conditions matched{')' * closing}", _MAX_REASON_CHARS)
        else:
            _, node, actual, matched = why
            return _clip(prefix + _condition_reason(node, actual, matched) + ")" * closing, _MAX_REASON_CHARS)
    return _clip(prefix, _MAX_REASON_CHARS)


def _trace_condition(
    node: Mapping[str, Any], data: Mapping[str, Any], where: str, recorder: _Recorder
) -> tuple[bool, _Why]:
    op: str = node["op"]
    path_text: str = node["path"]
    try:
        actual = resolve(data, parse_path(path_text))
    except PathNotFound:
        actual = _MISSING
    if actual is _MISSING:
        matched = op == "not_exists"
    elif op in PRESENCE_OPS:
        matched = op == "exists"
    else:
        compare = _COMPARISONS.get(op)
        if compare is None:
            raise FilterError(f"unknown op {_short(op)}")
        matched = compare(actual, node["value"])
    if recorder.full:
        recorder.truncated = True
    else:
        recorder.add(
            TraceStep(
                where,
                "condition",
                matched,
                path=_clip(path_text, _SHOWN_PATH_CHARS),
                op=op,
                expected=shown_value(node["value"]) if "value" in node else None,
                seen=None if actual is _MISSING else shown_value(actual),
                missing=actual is _MISSING,
            )
        )
    return matched, ("condition", node, actual, matched)


def _condition_reason(node: Mapping[str, Any], actual: object, matched: bool) -> str:
    path = _clip(node["path"], _SHOWN_PATH_CHARS)
    op = node["op"]
    if op == "exists":
        return f"{path} exists" if matched else f"{path} is missing, expected exists"
    if op == "not_exists":
        return f"{path} is missing" if matched else f"{path} is {_short(actual)}, expected not_exists"
    expected = f"{op} {_short(node['value'])}"
    if matched:
        return f"{path} {expected}"
    if actual is _MISSING:
        return f"{path} is missing, expected {expected}"
    return f"{path} is {_short(actual)}, expected {expected}"


def shown_value(value: object) -> object:
    """A value as a trace shows it: scalars as they are (strings shortened), containers as a
    short JSON preview of their first few items. Never walks more than one level of ``value``."""
    if value is None or isinstance(value, bool | int | float):
        return value
    if isinstance(value, str):
        return _clip(value, _SHOWN_VALUE_CHARS)
    if isinstance(value, Mapping):
        items = list(itertools.islice(value.items(), _SHOWN_ITEMS))
        sample: object = {_clip(str(k), _SHOWN_VALUE_CHARS): _item(v) for k, v in items}
        more = len(value) > _SHOWN_ITEMS
    elif isinstance(value, list | tuple):
        sample = [_item(v) for v in value[:_SHOWN_ITEMS]]
        more = len(value) > _SHOWN_ITEMS
    else:
        return _short(value)
    try:
        text = orjson.dumps(sample).decode()
    except orjson.JSONEncodeError:  # e.g. an integer beyond 64 bits
        return _short(value)
    if more:
        text = text[:-1] + ",...]" if text.endswith("]") else text[:-1] + ",...}"
    return _clip(text, _SHOWN_VALUE_CHARS)


def _item(value: object) -> object:
    if value is None or isinstance(value, bool | int | float):
        return value
    if isinstance(value, str):
        return _clip(value, _SHOWN_VALUE_CHARS)
    return "{...}" if isinstance(value, Mapping) else "[...]"


# --- operators --------------------------------------------------------------------------


def _json_equal(left: object, right: object) -> bool:
    """JSON equality: like ``==`` except that booleans are never equal to numbers.

    Iterative: the values come from trigger data and owners' filters, so their depth is
    not ours to choose.
    """
    pairs = [(left, right)]
    while pairs:
        a, b = pairs.pop()
        if type(a) is type(b) and isinstance(a, str | int | float | None):
            if a != b:
                return False
        elif isinstance(a, bool) or isinstance(b, bool):
            if a is not b:
                return False
        elif isinstance(a, int | float) and isinstance(b, int | float):
            if a != b:
                return False
        elif isinstance(a, Mapping) and isinstance(b, Mapping):
            if a.keys() != b.keys():
                return False
            pairs.extend((a[k], b[k]) for k in a)
        elif isinstance(a, list | tuple) and isinstance(b, list | tuple):
            if len(a) != len(b):
                return False
            pairs.extend(zip(a, b, strict=True))
        else:
            return False
    return True


def _equals(actual: object, expected: object) -> bool:
    return _json_equal(actual, expected)


def _not_equals(actual: object, expected: object) -> bool:
    return not _json_equal(actual, expected)


def _in(actual: object, expected: object) -> bool:
    return isinstance(expected, list) and any(_json_equal(actual, item) for item in expected)


def _not_in(actual: object, expected: object) -> bool:
    return isinstance(expected, list) and not _in(actual, expected)


def _contains(actual: object, expected: object) -> bool:
    if isinstance(actual, str):
        return isinstance(expected, str) and expected in actual
    if isinstance(actual, list | tuple):
        return any(_json_equal(item, expected) for item in actual)
    return False


def _starts_with(actual: object, expected: object) -> bool:
    return isinstance(actual, str) and isinstance(expected, str) and actual.startswith(expected)


def _ends_with(actual: object, expected: object) -> bool:
    return isinstance(actual, str) and isinstance(expected, str) and actual.endswith(expected)


def _numeric(order: Callable[[float, float], bool]) -> Callable[[object, object], bool]:
    def compare(actual: object, expected: object) -> bool:
        left = _data_number(actual)
        right = _filter_number(expected)
        return left is not None and right is not None and order(left, right)

    return compare


_COMPARISONS: dict[str, Callable[[object, object], bool]] = {
    "equals": _equals,
    "not_equals": _not_equals,
    "in": _in,
    "not_in": _not_in,
    "contains": _contains,
    "starts_with": _starts_with,
    "ends_with": _ends_with,
    "gt": _numeric(operator.gt),
    "gte": _numeric(operator.ge),
    "lt": _numeric(operator.lt),
    "lte": _numeric(operator.le),
}


def _filter_number(value: object) -> int | float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return value if math.isfinite(value) else None


def _data_number(value: object) -> int | float | None:
    if isinstance(value, str):
        return _parse_number(value)
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return value


def _parse_number(text: str) -> int | float | None:
    """Read a JSON-style number (``"12"``, ``"-0.5"``, ``"1e3"``); anything else is not one."""
    match = _JSON_NUMBER.fullmatch(text) if len(text) <= _MAX_NUMERIC_STRING_CHARS else None
    if match is None:
        return None
    if match["fraction"] is None and match["exponent"] is None:
        return int(text)
    number = float(text)
    return number if math.isfinite(number) else None


# --- display ----------------------------------------------------------------------------


def _make_repr() -> reprlib.Repr:
    # Bounded at every level, so explaining a match never walks a large payload.
    shown = reprlib.Repr()
    shown.maxlevel = 2
    shown.maxdict = shown.maxlist = shown.maxtuple = 4
    shown.maxstring = shown.maxother = _SHOWN_VALUE_CHARS
    return shown


_REPR = _make_repr()


def _short(value: object) -> str:
    return _clip(_REPR.repr(value), _SHOWN_VALUE_CHARS)


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."
