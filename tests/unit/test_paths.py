from __future__ import annotations

import contextlib
import pickle
import re
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from schemas.paths import (
    PATH_PATTERN,
    PathError,
    PathNotFound,
    Segment,
    format_path,
    parse_path,
    resolve,
)

# --- parse_path ---------------------------------------------------------------------------


def test_dotted_path_splits_on_dots() -> None:
    assert parse_path("body.action") == ("body", "action")


def test_bracket_index_becomes_int() -> None:
    assert parse_path("body.items[0].sku") == ("body", "items", 0, "sku")


def test_dotted_index_becomes_int() -> None:
    assert parse_path("body.items.0.sku") == ("body", "items", 0, "sku")


def test_keys_may_contain_hyphens_and_underscores() -> None:
    assert parse_path("headers.x-github-event.a_b") == ("headers", "x-github-event", "a_b")


def test_double_quoted_bracket_key_may_contain_dots() -> None:
    assert parse_path('body["odd.key"]') == ("body", "odd.key")


def test_single_quoted_bracket_key_is_supported() -> None:
    assert parse_path("body['a b']") == ("body", "a b")


def test_backslash_escapes_quote_in_bracket_key() -> None:
    assert parse_path(r'body["say \"hi\""]') == ("body", 'say "hi"')


def test_quoted_digits_stay_a_string_key() -> None:
    assert parse_path('body["0"]') == ("body", "0")


def test_path_may_start_with_a_bracket() -> None:
    assert parse_path('["a.b"][2]') == ("a.b", 2)


def test_name_with_leading_zero_stays_a_string_key() -> None:
    assert parse_path("body.007") == ("body", "007")


def test_parse_results_are_cached() -> None:
    assert parse_path("cached.path[1]") is parse_path("cached.path[1]")


@pytest.mark.parametrize(
    "path",
    [
        "",
        "body.",
        ".body",
        "body..action",
        "body[01]",
        "body[-1]",
        "body[x]",
        'body["open',
        "body[0",
        "body action",
        " body",
        "body.items[99999999999999999999]",
        "body/action",
    ],
)
def test_malformed_path_raises_path_error(path: str) -> None:
    with pytest.raises(PathError):
        parse_path(path)


def test_path_error_says_where() -> None:
    with pytest.raises(PathError, match=r"invalid path 'body\.\.action': expected a key at position 5"):
        parse_path("body..action")


def test_negative_index_error_says_why() -> None:
    with pytest.raises(PathError, match="negative indexes are not allowed"):
        parse_path("items[-1]")


def test_non_string_path_raises_path_error() -> None:
    with pytest.raises(PathError, match="must be a string"):
        parse_path(12)


# --- format_path --------------------------------------------------------------------------


def test_format_path_writes_plain_names_dotted_and_indexes_in_brackets() -> None:
    assert format_path(("body", "items", 0, "sku")) == "body.items[0].sku"


def test_format_path_quotes_keys_that_are_not_plain_names() -> None:
    assert format_path(("body", "odd.key", "0", 'q"')) == r'body["odd.key"]["0"]["q\""]'


def test_format_path_rejects_negative_index() -> None:
    with pytest.raises(PathError):
        format_path(("items", -1))


# --- resolve ------------------------------------------------------------------------------

DATA: dict[str, Any] = {
    "body": {"order": {"id": 7, "items": [{"sku": "A"}, {"sku": "B"}]}, "0": "zero"},
    "headers": {"x-github-event": "push"},
    "text": "hello",
}


def test_resolve_walks_nested_dicts() -> None:
    assert resolve(DATA, "body.order.id") == 7


def test_resolve_indexes_lists() -> None:
    assert resolve(DATA, "body.order.items[1].sku") == "B"


def test_resolve_accepts_parsed_segments() -> None:
    assert resolve(DATA, ("body", "order", "items", 0, "sku")) == "A"


def test_numeric_segment_on_dict_is_a_string_key() -> None:
    assert resolve(DATA, "body.0") == "zero"


def test_resolve_returns_containers_themselves() -> None:
    assert resolve(DATA, "body.order") is DATA["body"]["order"]


def test_missing_key_message_names_path_and_key() -> None:
    with pytest.raises(PathNotFound) as caught:
        resolve(DATA, "body.customer.name")
    assert str(caught.value) == "path 'body.customer.name' not found (no key 'customer')"
    assert caught.value.path == "body.customer.name"


def test_index_out_of_range_is_not_found() -> None:
    with pytest.raises(PathNotFound, match=r"no index 5; the list has 2 items"):
        resolve(DATA, "body.order.items[5]")


def test_string_key_on_list_is_not_found() -> None:
    with pytest.raises(PathNotFound, match=r"'body\.order\.items' is a list"):
        resolve(DATA, "body.order.items.first")


def test_stepping_into_a_scalar_is_not_found() -> None:
    with pytest.raises(PathNotFound, match=r"'text' is a string, so it has no key 'length'"):
        resolve(DATA, "text.length")


def test_negative_index_in_segments_is_not_found() -> None:
    with pytest.raises(PathNotFound):
        resolve({"items": [1, 2]}, ("items", -1))


def test_malformed_path_string_raises_path_error() -> None:
    with pytest.raises(PathError):
        resolve(DATA, "body..order")


def test_empty_segments_raise_path_error() -> None:
    with pytest.raises(PathError):
        resolve(DATA, ())


def test_path_not_found_survives_pickling() -> None:
    with pytest.raises(PathNotFound) as caught:
        resolve(DATA, "body.nope")
    copy = pickle.loads(pickle.dumps(caught.value))
    assert (copy.path, str(copy)) == (caught.value.path, str(caught.value))


# --- properties ---------------------------------------------------------------------------

json_scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text()
json_values = st.recursive(
    json_scalars,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(), children, max_size=4),
    max_leaves=12,
)
segments = st.lists(
    st.text(min_size=0, max_size=8) | st.integers(min_value=0, max_value=10**6),
    min_size=1,
    max_size=6,
).map(tuple)
path_alphabet = "ab0_-.[]\"'\\ 9"


# Nested data is slow to generate; 50 examples keep the suite quick.
few = settings(max_examples=50)


def _walk(value: object, prefix: tuple[Segment, ...] = ()) -> list[tuple[tuple[Segment, ...], object]]:
    """Every (path, value) pair reachable below ``value``."""
    found: list[tuple[tuple[Segment, ...], object]] = []
    children: list[tuple[Segment, object]] = []
    if isinstance(value, dict):
        children = list(value.items())
    elif isinstance(value, list):
        children = list(enumerate(value))
    for key, child in children:
        path = (*prefix, key)
        found.append((path, child))
        found.extend(_walk(child, path))
    return found


@given(json_values)
@few
def test_every_path_walked_from_data_resolves_to_its_value(data: object) -> None:
    for path, value in _walk(data):
        assert resolve(data, format_path(path)) is value


@given(segments)
@few
def test_format_then_parse_round_trips(path: tuple[Segment, ...]) -> None:
    assert parse_path(format_path(path)) == path


@given(st.text() | st.text(alphabet=path_alphabet))
def test_parse_path_raises_only_path_error(text: str) -> None:
    with contextlib.suppress(PathError):
        parse_path(text)


@given(st.text(alphabet=path_alphabet, max_size=12))
def test_path_pattern_accepts_exactly_what_parse_path_accepts(text: str) -> None:
    try:
        parse_path(text)
        parsed = True
    except PathError:
        parsed = False
    assert (re.search(PATH_PATTERN, text) is not None) == parsed
