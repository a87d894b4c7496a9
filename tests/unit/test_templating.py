from __future__ import annotations

from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from actions.templating import TemplateError, find_paths, render

CONTEXT: dict[str, Any] = {
    "trigger": {
        "body": {
            "order": {"id": 1042, "total": 19.5, "paid": True, "note": None},
            "items": [{"sku": "A-1"}, {"sku": "B-2"}],
            "customer": {"name": "Ada"},
            "odd.key": "dotted",
        },
        "headers": {"x-github-event": "push"},
    }
}


# --- substitution -------------------------------------------------------------------------


def test_expression_inside_text_is_substituted() -> None:
    assert render("Hello {{ trigger.body.customer.name }}!", CONTEXT) == "Hello Ada!"


def test_whitespace_inside_braces_is_optional() -> None:
    assert render("{{trigger.body.customer.name}}", CONTEXT) == "Ada"


def test_several_expressions_in_one_string() -> None:
    template = "/orders/{{ trigger.body.order.id }}/items/{{ trigger.body.items[1].sku }}"
    assert render(template, CONTEXT) == "/orders/1042/items/B-2"


def test_bracket_quoted_and_hyphenated_paths_work() -> None:
    template = '{{ trigger.body["odd.key"] }} {{ trigger.headers.x-github-event }}'
    assert render(template, CONTEXT) == "dotted push"


def test_whole_expression_keeps_an_int() -> None:
    assert render("{{ trigger.body.order.id }}", CONTEXT) == 1042


def test_whole_expression_keeps_an_object() -> None:
    assert render("{{ trigger.body.order }}", CONTEXT) == CONTEXT["trigger"]["body"]["order"]


def test_whole_expression_keeps_a_list() -> None:
    assert render("{{ trigger.body.items }}", CONTEXT) == [{"sku": "A-1"}, {"sku": "B-2"}]


def test_whole_expression_keeps_null() -> None:
    assert render("{{ trigger.body.order.note }}", CONTEXT) is None


def test_surrounding_space_makes_it_text() -> None:
    assert render(" {{ trigger.body.order.id }}", CONTEXT) == " 1042"


@pytest.mark.parametrize(
    ("path", "text"),
    [
        ("trigger.body.order.total", "19.5"),
        ("trigger.body.order.paid", "true"),
        ("trigger.body.order.note", "null"),
        ("trigger.body.items[0]", '{"sku":"A-1"}'),
        ("trigger.body.items", '[{"sku":"A-1"},{"sku":"B-2"}]'),
    ],
)
def test_values_in_text_are_stringified(path: str, text: str) -> None:
    assert render(f"v={{{{ {path} }}}}", CONTEXT) == f"v={text}"


def test_substituted_values_are_not_rendered_again() -> None:
    context = {"trigger": {"body": {"evil": "{{ trigger.secret }}"}}}
    assert render("x {{ trigger.body.evil }}", context) == "x {{ trigger.secret }}"


def test_dicts_and_lists_are_walked_and_keys_left_alone() -> None:
    template = {"{{ key }}": ["{{ trigger.body.order.id }}", 5, True, None], "n": 1.5}
    assert render(template, CONTEXT) == {"{{ key }}": [1042, 5, True, None], "n": 1.5}


def test_template_is_not_modified() -> None:
    template = {"id": "{{ trigger.body.order.id }}"}
    render(template, CONTEXT)
    assert template == {"id": "{{ trigger.body.order.id }}"}


# --- default ------------------------------------------------------------------------------


def test_default_is_used_when_path_is_missing() -> None:
    assert render('Hi {{ trigger.body.nick | default("friend") }}', CONTEXT) == "Hi friend"


def test_default_is_ignored_when_path_is_present() -> None:
    assert render('{{ trigger.body.customer.name | default("friend") }}', CONTEXT) == "Ada"


def test_default_does_not_replace_a_present_null() -> None:
    assert render("{{ trigger.body.order.note | default(0) }}", CONTEXT) is None


@pytest.mark.parametrize(
    ("literal", "value"),
    [("42", 42), ("-1.5e2", -150.0), ("true", True), ("false", False), ("null", None)],
)
def test_default_accepts_json_literals(literal: str, value: object) -> None:
    assert render(f"{{{{ trigger.nothing|default({literal}) }}}}", CONTEXT) == value


def test_default_keeps_long_integers_exact() -> None:
    assert render("{{ x | default(123456789012345678901234567890) }}", {}) == 123456789012345678901234567890


def test_default_string_may_contain_braces_and_pipes() -> None:
    assert render('{{ x | default("}} | {{") }}', {}) == "}} | {{"


@pytest.mark.parametrize(
    "template",
    [
        "{{ x | default('single') }}",
        "{{ x | default(friend) }}",
        "{{ x | default() }}",
        "{{ x | default }}",
        '{{ x | default("a", "b") }}',
        "{{ x | default([1]) }}",
    ],
)
def test_default_rejects_anything_but_one_json_literal(template: str) -> None:
    with pytest.raises(TemplateError):
        render(template, {})


def test_unknown_filter_is_an_error() -> None:
    with pytest.raises(TemplateError, match="unknown filter 'upper'"):
        render("{{ trigger.body.customer.name | upper }}", CONTEXT)


# --- errors -------------------------------------------------------------------------------


def test_missing_path_error_names_field_and_path() -> None:
    with pytest.raises(TemplateError) as caught:
        render("{{ trigger.body.order.id }}", {"trigger": {"body": {}}}, field="url")
    assert str(caught.value) == "url: path 'trigger.body.order.id' not found (no key 'order')"


def test_error_field_grows_with_dict_keys() -> None:
    template = {"headers": {"X-Order": "{{ trigger.body.nope }}"}}
    with pytest.raises(TemplateError, match=r"^headers\.X-Order: path 'trigger\.body\.nope'"):
        render(template, CONTEXT)


def test_error_field_grows_with_list_indexes() -> None:
    with pytest.raises(TemplateError, match=r"^body\.tags\[1\]: path 'nope' not found"):
        render({"tags": ["ok", "{{ nope }}"]}, CONTEXT, field="body")


def test_error_shows_the_path_as_written() -> None:
    with pytest.raises(TemplateError, match=r"path 'trigger\.body\.items\.5' not found"):
        render("{{ trigger.body.items.5 }}", CONTEXT)


@pytest.mark.parametrize(
    ("template", "problem"),
    [
        ("{{ trigger.body", "'{{' is never closed"),
        ("{{ }}", "empty expression"),
        ("{{ trigger..body }}", "invalid path"),
        ("{{ trigger.body }", "expected '}}'"),
        ("{{ | default(1) }}", "expected a path"),
        ("{{ a |  }}", "expected a filter name"),
    ],
)
def test_malformed_expression_is_an_error(template: str, problem: str) -> None:
    with pytest.raises(TemplateError, match=rf"^text: invalid template .*{problem}"):
        render(template, CONTEXT, field="text")


@pytest.mark.parametrize(
    "template",
    [
        "{{ __import__('os') }}",
        "{{ __import__('os').system('true') }}",
        "{{ trigger.body.order.id + 1 }}",
        "{{ trigger.body.customer.name.upper() }}",
        "{{ x | default(__import__('os')) }}",
        "{{ [c for c in ()] }}",
        "{{ lambda: 1 }}",
    ],
)
def test_code_is_never_executed(template: str) -> None:
    with pytest.raises(TemplateError):
        render(template, CONTEXT)


def test_attribute_names_are_only_dict_keys() -> None:
    with pytest.raises(TemplateError, match="no key '__class__'"):
        render("{{ trigger.body.order.id.__class__ }}", CONTEXT)


def test_value_that_is_not_json_cannot_be_put_in_text() -> None:
    with pytest.raises(TemplateError, match=r"^note: cannot insert a set into text"):
        render("v={{ s }}", {"s": {1}}, field="note")


# --- find_paths ---------------------------------------------------------------------------


def test_find_paths_lists_each_path_once_in_order() -> None:
    template = {
        "url": "/o/{{ trigger.body.order.id }}/{{trigger.body.items[0].sku}}",
        "body": ["{{ trigger.body.order.id }}", {"name": '{{ trigger.body.nick | default("x") }}'}],
        "{{ key.ignored }}": 3,
    }
    assert find_paths(template) == [
        "trigger.body.order.id",
        "trigger.body.items[0].sku",
        "trigger.body.nick",
    ]


def test_find_paths_of_plain_config_is_empty() -> None:
    assert find_paths({"url": "https://example.com", "retries": 3}) == []


def test_find_paths_rejects_a_malformed_template_naming_the_field() -> None:
    with pytest.raises(TemplateError, match=r"^headers\.X-Id: invalid template"):
        find_paths({"headers": {"X-Id": "{{ trigger.body.id"}})


# --- properties ---------------------------------------------------------------------------

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(), children, max_size=3),
    max_leaves=10,
)


# Nested data is slow to generate; 50 examples keep the suite quick.
few = settings(max_examples=50)


@given(st.text().filter(lambda text: "{{" not in text))
def test_text_without_expressions_renders_unchanged(text: str) -> None:
    assert render(text, CONTEXT) == text


@given(json_values)
@few
def test_whole_expression_returns_the_value_itself(value: object) -> None:
    assert render("{{ trigger.value }}", {"trigger": {"value": value}}) is value


@given(json_values.filter(lambda value: not isinstance(value, str)))
@few
def test_non_strings_in_text_match_their_json(value: object) -> None:
    rendered = render("[{{ v }}]", {"v": value})
    assert isinstance(rendered, str)
    assert orjson.loads(rendered[1:-1]) == orjson.loads(orjson.dumps(value))


def test_a_config_that_passes_the_save_time_check_renders_within_the_depth_limit() -> None:
    from actions.templating import MAX_TEMPLATE_DEPTH, check_templates

    deepest: Any = []  # the config object plus these lists: MAX_TEMPLATE_DEPTH levels in all
    for _ in range(MAX_TEMPLATE_DEPTH - 2):
        deepest = [deepest]
    check_templates({"body": deepest})
    assert render(deepest, CONTEXT) == deepest
    with pytest.raises(TemplateError, match="nested more than"):
        check_templates({"body": [deepest]})
