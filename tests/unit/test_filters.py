from __future__ import annotations

import copy
from typing import Any

import jsonschema
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from triggers.filters import (
    FILTER_SCHEMA,
    LIST_OPS,
    MAX_CONDITIONS,
    MAX_DEPTH,
    NUMERIC_OPS,
    OPS,
    PRESENCE_OPS,
    STRING_OPS,
    FilterError,
    FilterOutcome,
    evaluate,
    filter_schema,
    validate_filter,
)

DATA: dict[str, Any] = {
    "body": {
        "action": "opened",
        "title": "Fix the parser",
        "labels": ["bug", "urgent"],
        "count": 3,
        "price": "12.5",
        "draft": False,
        "merged": True,
        "assignee": None,
        "repo": {"name": "hookyard", "stars": 42},
    },
    "headers": {"x-github-event": "pull_request"},
}


def cond(path: str, op: str, *value: object) -> dict[str, Any]:
    node: dict[str, Any] = {"path": path, "op": op}
    if value:
        node["value"] = value[0]
    return node


def matched(node: dict[str, Any] | None, data: dict[str, Any] = DATA) -> bool:
    if node is not None:
        validate_filter(node)
    return evaluate(node, data).matched


# --- operators ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("node", "expected"),
    [
        (cond("body.action", "equals", "opened"), True),
        (cond("body.action", "equals", "closed"), False),
        (cond("body.action", "not_equals", "closed"), True),
        (cond("body.action", "not_equals", "opened"), False),
        (cond("body.action", "in", ["opened", "reopened"]), True),
        (cond("body.action", "in", ["closed"]), False),
        (cond("body.action", "not_in", ["closed"]), True),
        (cond("body.action", "not_in", ["opened"]), False),
        (cond("body.assignee", "exists"), True),
        (cond("body.milestone", "exists"), False),
        (cond("body.milestone", "not_exists"), True),
        (cond("body.action", "not_exists"), False),
        (cond("body.title", "contains", "parser"), True),
        (cond("body.title", "contains", "lexer"), False),
        (cond("body.labels", "contains", "bug"), True),
        (cond("body.labels", "contains", "feature"), False),
        (cond("body.title", "starts_with", "Fix"), True),
        (cond("body.title", "starts_with", "parser"), False),
        (cond("body.title", "ends_with", "parser"), True),
        (cond("body.title", "ends_with", "Fix"), False),
        (cond("body.count", "gt", 2), True),
        (cond("body.count", "gt", 3), False),
        (cond("body.count", "gte", 3), True),
        (cond("body.count", "gte", 3.5), False),
        (cond("body.count", "lt", 4), True),
        (cond("body.count", "lt", 3), False),
        (cond("body.count", "lte", 3), True),
        (cond("body.count", "lte", 2.9), False),
    ],
    ids=lambda v: str(v) if isinstance(v, bool) else f"{v['op']}-{v.get('value')}",
)
def test_operator(node: dict[str, Any], expected: bool) -> None:
    assert matched(node) is expected


def test_equals_treats_int_and_float_as_the_same_number() -> None:
    assert matched(cond("body.count", "equals", 3.0))


def test_equals_does_not_convert_strings_to_numbers() -> None:
    assert not matched(cond("body.count", "equals", "3"))


def test_equals_does_not_treat_true_as_one() -> None:
    assert not matched(cond("body.merged", "equals", 1))


def test_equals_compares_objects_deeply() -> None:
    assert matched(cond("body.repo", "equals", {"stars": 42.0, "name": "hookyard"}))


def test_equals_keeps_booleans_apart_from_numbers_inside_lists() -> None:
    assert not matched(cond("body.flags", "equals", [1, 0]), {"body": {"flags": [True, False]}})


def test_in_uses_json_equality() -> None:
    assert not matched(cond("body.merged", "in", [1, 2]))


def test_contains_on_a_non_string_non_list_is_false() -> None:
    assert not matched(cond("body.count", "contains", 3))


def test_contains_string_needs_a_string_value() -> None:
    assert not matched(cond("body.title", "contains", 1))


def test_numeric_string_in_data_is_compared_as_a_number() -> None:
    assert matched(cond("body.price", "gt", 12))


@pytest.mark.parametrize("text", ["nan", "inf", "1_000", " 5", "0x10", "1e999", "١٢", ""])
def test_string_that_is_not_a_json_number_does_not_compare(text: str) -> None:
    assert not matched(cond("body.v", "gte", 0), {"body": {"v": text}})


def test_boolean_in_data_is_not_a_number() -> None:
    assert not matched(cond("body.merged", "gte", 0))


def test_starts_with_on_a_number_is_false() -> None:
    assert not matched(cond("body.count", "starts_with", "3"))


@pytest.mark.parametrize("op", [op for op in OPS if op not in PRESENCE_OPS])
def test_missing_path_makes_every_comparison_false(op: str) -> None:
    value: object = "x"
    if op in LIST_OPS:
        value = ["x"]
    elif op in NUMERIC_OPS:
        value = 0
    assert not matched(cond("body.nothing.here", op, value))


def test_null_counts_as_existing() -> None:
    assert matched(cond("body.assignee", "exists"))


def test_path_through_a_scalar_is_missing() -> None:
    assert matched(cond("body.count.value", "not_exists"))


def test_header_names_with_hyphens_are_paths() -> None:
    assert matched(cond("headers.x-github-event", "equals", "pull_request"))


def test_list_index_in_path() -> None:
    assert matched(cond("body.labels[1]", "equals", "urgent"))


# --- groups -------------------------------------------------------------------------------

YES = cond("body.action", "equals", "opened")
NO = cond("body.action", "equals", "closed")


def test_no_filter_matches() -> None:
    assert evaluate(None, DATA) == FilterOutcome(matched=True, reason="no filter")


def test_all_needs_every_child() -> None:
    assert (matched({"all": [YES, YES]}), matched({"all": [YES, NO]})) == (True, False)


def test_any_needs_one_child() -> None:
    assert (matched({"any": [NO, YES]}), matched({"any": [NO, NO]})) == (True, False)


def test_not_inverts_its_child() -> None:
    assert (matched({"not": NO}), matched({"not": YES})) == (True, False)


def test_not_of_a_missing_comparison_matches() -> None:
    assert matched({"not": cond("body.nothing", "equals", 1)})


# --- reasons ------------------------------------------------------------------------------


def test_reason_for_a_match_states_the_condition() -> None:
    assert evaluate(YES, DATA).reason == "body.action equals 'opened'"


def test_reason_for_a_mismatch_shows_actual_and_expected() -> None:
    assert evaluate(NO, DATA).reason == "body.action is 'opened', expected equals 'closed'"


def test_reason_for_a_missing_path_says_missing() -> None:
    outcome = evaluate(cond("body.milestone", "equals", "v1"), DATA)
    assert outcome.reason == "body.milestone is missing, expected equals 'v1'"


def test_reason_for_failed_all_is_first_failing_child() -> None:
    outcome = evaluate({"all": [YES, cond("body.count", "gt", 10), NO]}, DATA)
    assert (outcome.matched, outcome.reason) == (False, "body.count is 3, expected gt 10")


def test_reason_for_passed_all_counts_conditions() -> None:
    assert evaluate({"all": [YES, YES, YES]}, DATA).reason == "all 3 conditions matched"


def test_reason_for_passed_any_is_first_matching_child() -> None:
    assert evaluate({"any": [NO, YES]}, DATA).reason == "body.action equals 'opened'"


def test_reason_for_failed_any_notes_none_matched() -> None:
    reason = evaluate({"any": [NO, NO]}, DATA).reason
    assert reason.startswith("none of 2 conditions matched")


def test_reason_for_not_wraps_the_child() -> None:
    assert evaluate({"not": YES}, DATA).reason == "not (body.action equals 'opened')"


def test_reason_for_exists_and_not_exists() -> None:
    reasons = [evaluate(cond(p, op), DATA).reason for p, op in [("body.x", "exists"), ("body.x", "not_exists")]]
    assert reasons == ["body.x is missing, expected exists", "body.x is missing"]


def test_reason_is_short_even_for_huge_values() -> None:
    data = {"body": {"blob": "x" * 100_000, "list": list(range(10_000))}}
    node = {"all": [cond("body.list", "equals", "y" * 5_000), cond("body.blob", "equals", 1)]}
    assert len(evaluate(node, data).reason) <= 200


# --- validation ---------------------------------------------------------------------------


def test_validation_error_names_the_location() -> None:
    node = {"all": [YES, cond("body.count", "bigger", 1)]}
    with pytest.raises(FilterError, match=r"^filter\.all\[1\]\.op: 'bigger' is not one of equals, "):
        validate_filter(node)


def test_validation_rejects_regex_operator() -> None:
    with pytest.raises(FilterError, match=r"filter\.op: 'matches' is not one of"):
        validate_filter(cond("body.title", "matches", ".*"))


def test_validation_checks_path_syntax() -> None:
    with pytest.raises(FilterError, match=r"filter\.not\.path: invalid path 'body\.\.x'"):
        validate_filter({"not": cond("body..x", "exists")})


@pytest.mark.parametrize(
    ("node", "message"),
    [
        ([], r"^filter: expected an object, got a list$"),
        ({}, r"^filter: expected 'all', 'any', 'not' or a condition"),
        ({"all": [YES], "any": [YES]}, r"^filter: has both 'all' and 'any'"),
        ({"all": [YES], "note": "x"}, r"^filter: unexpected key 'note'"),
        ({"all": []}, r"^filter\.all: must contain at least one condition"),
        ({"any": YES}, r"^filter\.any: expected a list, got an object"),
        ({"op": "exists"}, r"^filter: missing 'path'"),
        ({"path": "a"}, r"^filter: missing 'op'"),
        ({"path": 3, "op": "exists"}, r"^filter\.path: expected a string, got a number"),
        (cond("a", "equals"), r"^filter: op 'equals' needs a 'value'"),
        (cond("a", "exists", True), r"^filter\.value: not allowed with op 'exists'"),
        (cond("a", "in", "abc"), r"^filter\.value: op 'in' needs a list, got a string"),
        (cond("a", "starts_with", 1), r"^filter\.value: op 'starts_with' needs a string"),
        (cond("a", "gt", True), r"^filter\.value: op 'gt' needs a number, got a boolean"),
        (cond("a", "lt", "5"), r"^filter\.value: op 'lt' needs a number, got a string"),
        (cond("a", "lt", float("inf")), r"^filter\.value: op 'lt' needs a number"),
        ({"any": [YES, {"not": 5}]}, r"^filter\.any\[1\]\.not: expected an object, got a number"),
    ],
)
def test_validation_rejects(node: object, message: str) -> None:
    with pytest.raises(FilterError, match=message):
        validate_filter(node)


def _nested_nots(levels: int) -> dict[str, Any]:
    node: dict[str, Any] = YES
    for _ in range(levels):
        node = {"not": node}
    return node


def test_validation_allows_max_depth() -> None:
    validate_filter(_nested_nots(MAX_DEPTH - 1))


def test_validation_rejects_deeper_than_max_depth() -> None:
    with pytest.raises(FilterError, match=f"at most {MAX_DEPTH} levels deep"):
        validate_filter(_nested_nots(MAX_DEPTH))


def test_validation_allows_max_conditions() -> None:
    validate_filter({"any": [YES] * MAX_CONDITIONS})


def test_validation_rejects_more_than_max_conditions() -> None:
    node = {"any": [YES] * MAX_CONDITIONS + [{"not": YES}]}
    with pytest.raises(FilterError, match=rf"^filter\.any\[100\]\.not: .*at most {MAX_CONDITIONS}"):
        validate_filter(node)


def test_evaluate_rejects_an_unknown_operator_it_was_not_protected_from() -> None:
    with pytest.raises(FilterError, match="unknown op 'bigger'"):
        evaluate(cond("body.action", "bigger", 1), DATA)


def test_evaluate_rejects_a_structurally_broken_node() -> None:
    with pytest.raises(FilterError, match="validate_filter"):
        evaluate({"path": "body.action"}, DATA)


# --- JSON Schema --------------------------------------------------------------------------


def test_filter_schema_is_a_valid_draft_2020_12_schema() -> None:
    jsonschema.Draft202012Validator.check_schema(FILTER_SCHEMA)


def test_schema_accepts_a_nested_filter() -> None:
    node = {"all": [YES, {"any": [{"not": NO}, cond("body.count", "gte", 1)]}]}
    assert jsonschema.Draft202012Validator(FILTER_SCHEMA).is_valid(node)


def test_schema_rejects_a_bad_operator_deep_inside() -> None:
    node = {"all": [YES, {"any": [{"not": cond("a", "bigger", 1)}]}]}
    assert not jsonschema.Draft202012Validator(FILTER_SCHEMA).is_valid(node)


def test_embedded_schema_still_recurses() -> None:
    workflow = {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "type": "object",
        "properties": {"trigger": {"type": "object", "properties": {"filter": filter_schema()}}},
    }
    validator = jsonschema.Draft202012Validator(workflow)
    good = {"trigger": {"filter": {"any": [{"not": YES}]}}}
    bad = {"trigger": {"filter": {"any": [{"not": cond("a", "bigger", 1)}]}}}
    assert (validator.is_valid(good), validator.is_valid(bad)) == (True, False)


def test_filter_schema_returns_an_independent_copy() -> None:
    before = copy.deepcopy(FILTER_SCHEMA)
    filter_schema()["anyOf"].clear()
    assert before == FILTER_SCHEMA


# --- properties ---------------------------------------------------------------------------

KEYS = ["a", "b", "0", "x-y"]
json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(-5, 5)
    | st.floats(-5, 5, allow_nan=False)
    | st.sampled_from(["", "a", "ab", "3", "2.5", "-1", "x"])
)
json_data = st.recursive(
    json_scalars,
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.sampled_from(KEYS), children, max_size=4),
    max_leaves=8,
)
paths = st.lists(st.sampled_from([*KEYS, "[0]", "[1]"]), min_size=1, max_size=4).map(
    lambda parts: "".join(p if p.startswith("[") else f".{p}" for p in parts).lstrip(".")
)
finite_numbers = st.integers(-5, 5) | st.floats(-5, 5, allow_nan=False)


@st.composite
def conditions(draw: st.DrawFn) -> dict[str, Any]:
    op = draw(st.sampled_from(OPS))
    node: dict[str, Any] = {"path": draw(paths), "op": op}
    if op in LIST_OPS:
        node["value"] = draw(st.lists(json_scalars, max_size=3))
    elif op in STRING_OPS:
        node["value"] = draw(st.sampled_from(["", "a", "b", "3"]))
    elif op in NUMERIC_OPS:
        node["value"] = draw(finite_numbers)
    elif op not in PRESENCE_OPS:
        node["value"] = draw(json_data)
    return node


filters = st.recursive(
    conditions(),
    lambda children: (
        st.builds(lambda c: {"all": c}, st.lists(children, min_size=1, max_size=3))
        | st.builds(lambda c: {"any": c}, st.lists(children, min_size=1, max_size=3))
        | st.builds(lambda c: {"not": c}, children)
    ),
    max_leaves=6,
)
# Generating trees dominates the run time; 30 examples keep the suite quick.
few = settings(max_examples=30)


def _depth(node: dict[str, Any]) -> int:
    children = node.get("all") or node.get("any") or ([node["not"]] if "not" in node else [])
    return 1 + max((_depth(child) for child in children), default=0)


@given(filters)
@few
def test_generated_filters_pass_validation_and_the_schema(node: dict[str, Any]) -> None:
    assume(_depth(node) <= MAX_DEPTH)
    validate_filter(node)
    assert jsonschema.Draft202012Validator(FILTER_SCHEMA).is_valid(node)


@given(filters, st.dictionaries(st.sampled_from(KEYS), json_data, max_size=4))
@few
def test_evaluate_never_raises_on_arbitrary_data(node: dict[str, Any], data: dict[str, Any]) -> None:
    outcome = evaluate(node, data)
    assert isinstance(outcome.matched, bool)
    assert len(outcome.reason) <= 200


@given(filters, st.dictionaries(st.sampled_from(KEYS), json_data, max_size=4))
@few
def test_not_inverts_the_outcome(node: dict[str, Any], data: dict[str, Any]) -> None:
    assert evaluate({"not": node}, data).matched is not evaluate(node, data).matched


@given(filters, st.dictionaries(st.sampled_from(KEYS), json_data, max_size=4))
@few
def test_group_of_one_is_its_child(node: dict[str, Any], data: dict[str, Any]) -> None:
    alone = evaluate(node, data)
    for group in ({"all": [node]}, {"any": [node]}):
        outcome = evaluate(group, data)
        assert (outcome.matched, outcome.reason) == (alone.matched, alone.reason)
