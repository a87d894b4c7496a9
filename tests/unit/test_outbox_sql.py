"""The outbox SQL compiler: identifiers are validated and quoted, values are always parameters."""

from __future__ import annotations

import re
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from schemas.outbox_sql import (
    CONDITION_OPS,
    IDENTIFIER_RE,
    MAX_BATCH,
    OutboxSqlError,
    compile_conditions,
    compile_outbox,
    quote_ident,
    quote_table,
)

identifiers = st.from_regex(IDENTIFIER_RE, fullmatch=True)
scalars = st.one_of(st.text(max_size=40).filter(lambda s: "\x00" not in s), st.integers(), st.booleans())


def _unquote(quoted: str) -> str:
    assert quoted.startswith('"') and quoted.endswith('"')
    inner = quoted[1:-1]
    # Inside, every quote is doubled: no lone quote could end the identifier early.
    assert re.fullmatch(r'(?:[^"]|"")*', inner)
    return inner.replace('""', '"')


@given(st.text(min_size=1, max_size=100).filter(lambda s: "\x00" not in s))
def test_quoting_makes_any_text_exactly_one_identifier(name: str) -> None:
    assert _unquote(quote_ident(name)) == name


def test_nul_cannot_be_quoted() -> None:
    with pytest.raises(OutboxSqlError):
        quote_ident("a\x00b")


@given(identifiers, st.one_of(st.none(), identifiers))
def test_a_table_is_one_or_two_quoted_identifiers(schema: str, table: str | None) -> None:
    name = schema if table is None else f"{schema}.{table}"
    assert [_unquote(part) for part in quote_table(name).split(".")] == name.split(".")


@pytest.mark.parametrize("table", ['a"b', "a.b.c", "1abc", "a b", "a;drop", "", "a" * 64, "a.", ".a", None, 5, ["a"]])
def test_a_table_that_is_not_identifiers_is_refused(table: Any) -> None:
    with pytest.raises(OutboxSqlError) as raised:
        quote_table(table)
    assert raised.value.field == "table"


rules = st.lists(
    st.fixed_dictionaries(
        {"column": identifiers, "op": st.sampled_from([op for op in CONDITION_OPS if "exists" not in op])}
    ).flatmap(
        lambda rule: st.fixed_dictionaries(
            {
                "column": st.just(rule["column"]),
                "op": st.just(rule["op"]),
                "value": st.lists(scalars, min_size=1, max_size=3) if rule["op"] in ("in", "not_in") else scalars,
            }
        )
    ),
    max_size=6,
)


@given(rules)
def test_condition_values_are_parameters_in_order_and_never_sql(given_rules: list[dict[str, Any]]) -> None:
    sql, params = compile_conditions(given_rules)
    assert params == [rule["value"] for rule in given_rules]
    outside_identifiers = re.sub(r'"(?:[^"]|"")*"', "", sql)
    assert re.findall(r"\$(\d+)", outside_identifiers) == [str(i + 1) for i in range(len(given_rules))]
    # Nothing but quoted identifiers, operators and placeholders: strip them and nothing of a value is left.
    stripped = re.sub(r'"(?:[^"]|"")*"', "", sql)
    assert re.fullmatch(r"[()\s=<>!$0-9ANDLYNOT]*", stripped.replace("ANY", "").replace("ALL", "")), stripped


def test_exists_rules_take_no_value_and_compile_to_null_tests() -> None:
    sql, params = compile_conditions(
        [{"column": "sent_at", "op": "not_exists"}, {"column": "channels", "op": "exists"}]
    )
    assert sql == '("sent_at" IS NULL) AND ("channels" IS NOT NULL)' and params == []


@pytest.mark.parametrize(
    ("rule", "field"),
    [
        ({"column": "a;b", "op": "equals", "value": 1}, "conditions[0].column"),
        ({"column": "a", "op": "regex", "value": ".*"}, "conditions[0].op"),
        ({"column": "a", "op": "equals"}, "conditions[0].value"),
        ({"column": "a", "op": "equals", "value": {"x": 1}}, "conditions[0].value"),
        ({"column": "a", "op": "in", "value": []}, "conditions[0].value"),
        ({"column": "a", "op": "exists", "value": 1}, "conditions[0].value"),
        ({"column": "a", "op": "equals", "value": "a\x00"}, "conditions[0].value"),
    ],
)
def test_an_unusable_rule_is_refused_by_field(rule: dict[str, Any], field: str) -> None:
    with pytest.raises(OutboxSqlError) as raised:
        compile_conditions([rule])
    assert raised.value.field == field


def test_the_claim_statement_skips_locked_rows_and_is_capped() -> None:
    sql = compile_outbox({"table": "public.ent_notification", "batch_size": 10_000})
    statement = sql.select_due(["7"], 1000)
    assert "FOR UPDATE OF t SKIP LOCKED" in statement.sql
    assert statement.params[-1] == MAX_BATCH and statement.params[-3] == ["7"]
    assert 'FROM "public"."ent_notification" AS t' in statement.sql


def test_defaults_follow_the_reference_design() -> None:
    sql = compile_outbox({"table": "ent_notification"})
    assert dict(sql.statuses) == {"pending": "PENDING", "processing": "PROCESSING", "sent": "SENT", "failed": "FAILED"}
    assert sql.batch_size == 100 and sql.max_attempts == 3 and sql.retry_interval_s == 60


def test_equal_status_values_are_refused() -> None:
    with pytest.raises(OutboxSqlError) as raised:
        compile_outbox({"table": "t", "statuses": {"sent": "PENDING"}})
    assert raised.value.field == "statuses"


def test_a_dollar_in_a_column_name_is_not_taken_for_a_placeholder() -> None:
    sql = compile_outbox({"table": "t", "conditions": [{"column": "A$0", "op": "equals", "value": "x"}]})
    statement = sql.select_due([], 1000)
    assert '"A$0" = $' in statement.sql and '"A$' + "1" not in statement.sql.replace('"A$0"', "")


@given(rules)
def test_the_claim_statement_numbers_every_parameter_once(given_rules: list[dict[str, Any]]) -> None:
    sql = compile_outbox(
        {
            "table": "t",
            "conditions": given_rules,
            "due_column": "due",
            "updated_column": "updated",
            "retry": {"attempts_column": "attempts"},
        }
    )
    write = sql.write_back_many([("1", "SENT", '{"a": 1}'), ("2", "FAILED", None)])
    for statement in (sql.select_due([], 1000), sql.backlog(), write):
        outside_identifiers = re.sub(r'"(?:[^"]|"")*"', "", statement.sql)
        used = {int(n) for n in re.findall(r"\$(\d+)", outside_identifiers)}
        assert used == set(range(1, len(statement.params) + 1)), statement.sql
