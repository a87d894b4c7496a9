"""The filter trace: which nodes were evaluated, each outcome and the value seen (one rule per test)."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from tests.unit.test_filters import DATA, KEYS, cond, filters, json_data
from triggers.filters import MAX_TRACE_STEPS, TraceStep, evaluate, trace

YES = cond("body.action", "equals", "opened")
NO = cond("body.action", "equals", "closed")


def steps(node: dict[str, Any], data: dict[str, Any] = DATA) -> list[dict[str, Any]]:
    return evaluate(node, data).trace_json()


def test_no_filter_has_an_empty_trace() -> None:
    outcome = evaluate(None, DATA)
    assert (outcome.matched, outcome.reason, outcome.trace) == (True, "no filter", ())


def test_a_condition_records_path_op_expected_and_the_value_seen() -> None:
    assert steps(cond("body.count", "gt", 10)) == [
        {
            "at": "filter",
            "kind": "condition",
            "matched": False,
            "path": "body.count",
            "op": "gt",
            "expected": 10,
            "seen": 3,
        }
    ]


def test_a_missing_path_is_seen_as_null_and_marked_missing() -> None:
    [step] = steps(cond("body.nothing", "exists"))
    assert (step["seen"], step["missing"], step["expected"], step["matched"]) == (None, True, None, False)


def test_all_stops_at_the_first_failing_child_and_counts_the_skipped() -> None:
    trail = steps({"all": [YES, NO, YES, YES]})
    assert [(s["at"], s["matched"]) for s in trail] == [
        ("filter", False),
        ("filter.all[0]", True),
        ("filter.all[1]", False),
    ]
    assert trail[0]["skipped"] == 2


def test_any_stops_at_the_first_matching_child() -> None:
    trail = steps({"any": [NO, YES, NO]})
    assert [(s["at"], s["matched"]) for s in trail] == [
        ("filter", True),
        ("filter.any[0]", False),
        ("filter.any[1]", True),
    ]
    assert trail[0]["skipped"] == 1


def test_not_records_the_group_inverted_and_its_child_as_it_was() -> None:
    trail = steps({"not": NO})
    assert [(s["at"], s["kind"], s["matched"]) for s in trail] == [
        ("filter", "not", True),
        ("filter.not", "condition", False),
    ]


def test_nested_nodes_are_located_like_validation_errors() -> None:
    trail = steps({"all": [YES, {"any": [NO, {"not": NO}]}]})
    assert [s["at"] for s in trail] == [
        "filter",
        "filter.all[0]",
        "filter.all[1]",
        "filter.all[1].any[0]",
        "filter.all[1].any[1]",
        "filter.all[1].any[1].not",
    ]


def test_long_strings_are_shortened_and_containers_previewed() -> None:
    data = {"body": {"text": "x" * 10_000, "items": list(range(10_000))}}
    text, items = steps({"all": [cond("body.text", "exists"), cond("body.items", "contains", -1)]}, data)[1:]
    assert isinstance(text["seen"], str) and len(text["seen"]) <= 50
    assert isinstance(items["seen"], str) and len(items["seen"]) <= 50


def test_a_trace_keeps_at_most_max_trace_steps_and_says_it_was_cut() -> None:
    node = {"all": [YES] * (MAX_TRACE_STEPS + 10)}
    outcome = evaluate(node, DATA)
    assert outcome.matched is True
    assert (len(outcome.trace), outcome.truncated) == (MAX_TRACE_STEPS, True)


def test_nesting_far_past_the_validation_limit_is_walked_without_recursion() -> None:
    node: dict[str, Any] = YES
    for _ in range(5000):
        node = {"not": node}
    outcome = trace(node, DATA)
    assert outcome.matched is True and outcome.truncated is True


def test_trace_steps_serialise_only_what_their_kind_has() -> None:
    group = TraceStep("filter", "all", True).to_json()
    route = TraceStep("route", "route", False, path="source", op="equals", expected="a", seen="b").to_json()
    assert group == {"at": "filter", "kind": "all", "matched": True}
    assert route == {
        "at": "route",
        "kind": "route",
        "matched": False,
        "path": "source",
        "op": "equals",
        "expected": "a",
        "seen": "b",
    }


def _reference(node: dict[str, Any], data: dict[str, Any]) -> bool:
    """The semantics, written the obvious (recursive) way for generated small filters only."""
    if "all" in node:
        return all(_reference(child, data) for child in node["all"])
    if "any" in node:
        return any(_reference(child, data) for child in node["any"])
    if "not" in node:
        return not _reference(node["not"], data)
    return evaluate(node, data).matched


def _node_at(root: dict[str, Any], at: str) -> dict[str, Any]:
    node = root
    for part in at.removeprefix("filter").split(".")[1:]:
        if part == "not":
            node = node["not"]
        else:
            key, index = part.rstrip("]").split("[")
            node = node[key][int(index)]
    return node


@given(filters, st.dictionaries(st.sampled_from(KEYS), json_data, max_size=4))
@settings(max_examples=40)
def test_the_trace_agrees_with_all_any_and_not(node: dict[str, Any], data: dict[str, Any]) -> None:
    outcome = evaluate(node, data)
    assert outcome.matched is _reference(node, data)
    for step in outcome.trace:
        assert step.matched is _reference(_node_at(node, step.at), data), step
