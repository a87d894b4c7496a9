"""NUL characters never reach PostgreSQL."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from schemas.sanitize import has_nul, strip_nul

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(), children, max_size=4),
    max_leaves=20,
)


@given(json_values)
def test_stripped_values_hold_no_nul(value: object) -> None:
    assert not has_nul(strip_nul(value))


@given(json_values)
def test_values_without_nul_are_unchanged(value: object) -> None:
    if not has_nul(value):
        assert strip_nul(value) == value


def test_nul_in_keys_and_nested_strings_is_replaced() -> None:
    assert strip_nul({"a\x00": ["x\x00y"]}) == {"a\ufffd": ["x\ufffdy"]}
