"""SQL run on an owner's own database for a `postgres.outbox` trigger, compiled from its config.

Everything the owner writes is either an identifier (table, columns), always validated and
then quoted (`quote_ident`, doubling quotes: the quoting alone makes any string one
identifier), or a value, always a bind parameter. No text of the config is ever placed in a
statement as SQL. Condition rules use the filter language's operators on columns.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

IDENTIFIER = r"[A-Za-z_][A-Za-z0-9_$]{0,62}"
IDENTIFIER_RE = re.compile(IDENTIFIER)
TABLE_RE = re.compile(rf"{IDENTIFIER}(?:\.{IDENTIFIER})?")

# op -> SQL comparison; `in`/`not_in` take a list (ANY), exists/not_exists none.
COMPARISONS = {"equals": "=", "not_equals": "<>", "gt": ">", "gte": ">=", "lt": "<", "lte": "<="}
CONDITION_OPS = (*COMPARISONS, "in", "not_in", "exists", "not_exists")
MAX_BATCH = 500
DEFAULT_STATUSES = {"pending": "PENDING", "processing": "PROCESSING", "sent": "SENT", "failed": "FAILED"}


class OutboxSqlError(ValueError):
    """A config names something that cannot be compiled; `field` says where."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field


def quote_ident(name: str) -> str:
    """`name` as one SQL identifier, whatever it contains (PostgreSQL's own quoting rule)."""
    if "\x00" in name:
        raise OutboxSqlError("identifier", "must not contain NUL")
    return '"' + name.replace('"', '""') + '"'


def _ident(name: object, where: str) -> str:
    if not isinstance(name, str) or not IDENTIFIER_RE.fullmatch(name):
        raise OutboxSqlError(where, "must be an identifier (letters, digits, _ and $; at most 63)")
    return quote_ident(name)


def quote_table(table: object) -> str:
    """`schema.table` or `table`, each part validated and quoted."""
    if not isinstance(table, str) or not TABLE_RE.fullmatch(table):
        raise OutboxSqlError("table", "must be `table` or `schema.table` (identifiers)")
    return ".".join(quote_ident(part) for part in table.split("."))


@dataclass(frozen=True, slots=True)
class Compiled:
    """A statement and its parameters, the owner's values all in `params`."""

    sql: str
    params: list[Any] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class OutboxSql:
    """The statements of one outbox config (validated once, when compiled)."""

    table: str
    id_col: str
    # Column names unquoted, as values: keys of `jsonb_populate_record`, which converts text ids,
    # status values and results to the columns' own types (whatever they are: bigint, uuid, enum).
    id_name: str
    status_name: str
    result_name: str | None
    status_col: str
    statuses: Mapping[str, str]
    # The rules, validated; compiled again for each statement with its own placeholder numbers.
    conditions: tuple[Mapping[str, Any], ...]
    due_col: str | None
    updated_col: str | None
    attempts_col: str | None
    result_col: str | None
    columns: tuple[str, ...] | None
    batch_size: int
    retry_failed: bool
    max_attempts: int
    retry_interval_s: float
    lease_timeout_s: float

    def _where_due(self, start: int) -> tuple[str, list[Any]]:
        """Rows a poll may claim: pending (and due), failed rows to retry, expired PROCESSING rows."""
        params: list[Any] = [self.statuses["pending"]]
        ors = [f"{self.status_col} = ${start}"]
        if self.retry_failed:
            params.append(self.statuses["failed"])
            retry = f"{self.status_col} = ${start + len(params) - 1}"
            if self.attempts_col is not None:
                params.append(self.max_attempts)
                retry += f" AND coalesce({self.attempts_col}, 0) < ${start + len(params) - 1}"
            if self.updated_col is not None:
                params.append(self.retry_interval_s)
                retry += f" AND {self.updated_col} <= now() - make_interval(secs => ${start + len(params) - 1})"
            ors.append(f"({retry})")
        if self.updated_col is not None:
            params.append(self.statuses["processing"])
            params.append(self.lease_timeout_s)
            n = start + len(params) - 2
            ors.append(f"({self.status_col} = ${n} AND {self.updated_col} <= now() - make_interval(secs => ${n + 1}))")
        where = "(" + " OR ".join(ors) + ")"
        if self.due_col is not None:
            where += f" AND ({self.due_col} IS NULL OR {self.due_col} <= now())"
        shifted, cond_params = self._conditions(start + len(params))
        return where + shifted, params + cond_params

    def _conditions(self, start: int) -> tuple[str, list[Any]]:
        # Compiled with this statement's numbering: never by rewriting SQL text, where a `$`
        # inside a quoted identifier would be taken for a placeholder.
        if not self.conditions:
            return "", []
        sql, params = compile_conditions(self.conditions, start)
        return f" AND {sql}", params

    def select_due(self, skip_ids: Sequence[str], max_row_bytes: int) -> Compiled:
        """Lock up to a batch of claimable rows (`FOR UPDATE SKIP LOCKED`), oldest due first.

        Returns the id (text and native), the status it had, and the row as JSON (NULL when
        larger than `max_row_bytes`: an owner's huge row is measured there, never fetched).
        `skip_ids`: rows hookyard holds open claims on or will not retry yet.
        """
        where, params = self._where_due(1)
        params.append(list(skip_ids))
        skip = f" AND NOT ({self.id_col}::text = ANY(${len(params)}::text[]))"
        params.append(max_row_bytes)
        size = f"${len(params)}"
        params.append(self.batch_size)
        order = f"{self.due_col} NULLS FIRST, " if self.due_col is not None else ""
        return Compiled(
            f"SELECT {self.id_col} AS id, {self.id_col}::text AS id_text, {self.status_col}::text AS status, "
            f"CASE WHEN octet_length(r.j) <= {size} THEN r.j END AS row_json "
            f"FROM {self.table} AS t CROSS JOIN LATERAL (SELECT to_jsonb(t)::text AS j) AS r "
            f"WHERE {where}{skip} ORDER BY {order}{self.id_col} LIMIT ${len(params)} FOR UPDATE OF t SKIP LOCKED",
            params,
        )

    def mark_processing(self, ids: list[Any], new_ids: list[Any]) -> Compiled:
        """Set the claimed rows PROCESSING (count an attempt for the newly claimed ones)."""
        sets = [f"{self.status_col} = $2"]
        params: list[Any] = [ids, self.statuses["processing"]]
        if self.updated_col is not None:
            sets.append(f"{self.updated_col} = now()")
        if self.attempts_col is not None:
            params.append(new_ids)
            sets.append(
                f"{self.attempts_col} = coalesce({self.attempts_col}, 0) + "
                f"CASE WHEN {self.id_col} = ANY($3) THEN 1 ELSE 0 END"
            )
        return Compiled(f"UPDATE {self.table} SET {', '.join(sets)} WHERE {self.id_col} = ANY($1)", params)

    def write_back(self, row_id: str, status: str, result_json: str | None) -> Compiled:
        """Set one row's outcome, only while hookyard's claim can hold.

        The id is stored as text; `jsonb_populate_record` converts it to the column's own type
        (so the id column's index is used, whatever that type is).

        The row must still be in a state of the claim (pending, processing, failed): a row the
        application moved on meanwhile (sent, deleted, another status) is left as it is.
        """
        params: list[Any] = [
            row_id,
            status,
            [self.statuses["pending"], self.statuses["processing"], self.statuses["failed"]],
            self.id_name,
        ]
        sets = [f"{self.status_col} = $2"]
        if self.updated_col is not None:
            sets.append(f"{self.updated_col} = now()")
        if self.result_col is not None and result_json is not None:
            params.append(result_json)
            sets.append(f"{self.result_col} = ${len(params)}")
        return Compiled(
            f"UPDATE {self.table} SET {', '.join(sets)} WHERE {self.id_col} = "
            f"(jsonb_populate_record(NULL::{self.table}, jsonb_build_object($4::text, $1::text))).{self.id_col} "
            f"AND {self.status_col}::text = ANY($3::text[]) RETURNING 1",
            params,
        )

    def write_back_many(self, rows: Sequence[tuple[str, str, str | None]]) -> Compiled:
        """`write_back` for many rows in one statement: (row id, status, result JSON or None).

        Returns the ids of the rows written. A None result leaves the result column as it is.
        """
        params: list[Any] = [
            [r[0] for r in rows],
            [r[1] for r in rows],
            [r[2] for r in rows],
            [self.statuses["pending"], self.statuses["processing"], self.statuses["failed"]],
            self.id_name,
            self.status_name,
            self.result_name,
        ]
        sets = [f"{self.status_col} = (p.r).{self.status_col}"]
        if self.result_col is not None:
            keep, new = f"t.{self.result_col}", f"(p.r).{self.result_col}"
            sets.append(f"{self.result_col} = CASE WHEN u.result IS NULL THEN {keep} ELSE {new} END")
        if self.updated_col is not None:
            sets.append(f"{self.updated_col} = now()")
        values = (
            "jsonb_build_object($5::text, u.id, $6::text, u.status) || "
            "CASE WHEN $7::text IS NULL OR u.result IS NULL THEN '{}'::jsonb "
            "ELSE jsonb_build_object($7::text, u.result) END"
        )
        return Compiled(
            f"UPDATE {self.table} AS t SET {', '.join(sets)} "
            "FROM unnest($1::text[], $2::text[], $3::jsonb[]) AS u(id, status, result) "
            f"CROSS JOIN LATERAL (SELECT jsonb_populate_record(NULL::{self.table}, {values}) AS r) AS p "
            f"WHERE t.{self.id_col} = (p.r).{self.id_col} AND t.{self.status_col}::text = ANY($4::text[]) "
            "RETURNING u.id",
            params,
        )

    def backlog(self) -> Compiled:
        """How many pending rows are due, and how late the oldest is (seconds; by due or updated column)."""
        params: list[Any] = [self.statuses["pending"]]
        where = f"{self.status_col} = $1"
        if self.due_col is not None:
            where += f" AND ({self.due_col} IS NULL OR {self.due_col} <= now())"
        conditions, condition_params = self._conditions(2)
        where += conditions
        params += condition_params
        time_col = self.due_col or self.updated_col
        lag = f"extract(epoch FROM now() - min({time_col}))::float8" if time_col is not None else "NULL::float8"
        return Compiled(
            f"SELECT count(*)::int AS due, {lag} AS lag FROM "
            f"(SELECT * FROM {self.table} AS t WHERE {where} LIMIT 10000) AS t",
            params,
        )


def compile_conditions(rules: Sequence[Mapping[str, Any]], start: int = 1) -> tuple[str, list[Any]]:
    """`rules` (column, op, value) as one parameterised condition, placeholders from `$start`."""
    parts: list[str] = []
    params: list[Any] = []
    base = start - 1
    for index, rule in enumerate(rules):
        where = f"conditions[{index}]"
        column = _ident(rule.get("column"), f"{where}.column")
        op = rule.get("op")
        if op in ("exists", "not_exists"):
            if "value" in rule:
                raise OutboxSqlError(f"{where}.value", f"is not taken by {op}")
            parts.append(f"{column} IS {'NOT ' if op == 'exists' else ''}NULL")
            continue
        if "value" not in rule:
            raise OutboxSqlError(f"{where}.value", f"is required by {op}")
        value = rule["value"]
        if op in ("in", "not_in"):
            if not isinstance(value, list) or not value or not all(_scalar(v) for v in value):
                raise OutboxSqlError(f"{where}.value", "must be a non-empty list of strings, numbers or booleans")
            params.append(value)
            test = "= ANY" if op == "in" else "<> ALL"
            parts.append(f"{column} {test}(${base + len(params)})")
        elif op in COMPARISONS:
            if not _scalar(value):
                raise OutboxSqlError(f"{where}.value", "must be a string, a number or a boolean")
            params.append(value)
            parts.append(f"{column} {COMPARISONS[op]} ${base + len(params)}")
        else:
            raise OutboxSqlError(f"{where}.op", f"must be one of {', '.join(CONDITION_OPS)}")
    return " AND ".join(f"({p})" for p in parts), params


def _scalar(value: object) -> bool:
    return isinstance(value, str | int | float | bool) and not (isinstance(value, str) and "\x00" in value)


def _optional(config: Mapping[str, Any], key: str, where: str | None = None) -> str | None:
    value = config.get(key)
    return None if value is None else _ident(value, where or key)


def compile_outbox(config: Mapping[str, Any]) -> OutboxSql:
    """The statements of a `postgres.outbox` config; `OutboxSqlError` names what cannot be used."""
    rules = tuple(config.get("conditions") or [])
    compile_conditions(rules)  # validates
    statuses = {**DEFAULT_STATUSES, **(config.get("statuses") or {})}
    for key, value in statuses.items():
        if not isinstance(value, str) or not value or "\x00" in value:
            raise OutboxSqlError(f"statuses.{key}", "must be a non-empty string")
    if len(set(statuses.values())) != len(statuses):
        raise OutboxSqlError("statuses", "must be four different values")
    retry: Mapping[str, Any] = config.get("retry") or {}
    columns = config.get("columns")
    batch = int(config.get("batch_size", 100))
    return OutboxSql(
        table=quote_table(config.get("table")),
        id_col=_ident(config.get("id_column", "id"), "id_column"),
        id_name=str(config.get("id_column", "id")),
        status_name=str(config.get("status_column", "status")),
        result_name=None if config.get("result_column") is None else str(config["result_column"]),
        status_col=_ident(config.get("status_column", "status"), "status_column"),
        statuses=statuses,
        conditions=rules,
        due_col=_optional(config, "due_column"),
        updated_col=_optional(config, "updated_column"),
        attempts_col=_optional(retry, "attempts_column", "retry.attempts_column"),
        result_col=_optional(config, "result_column"),
        columns=None if columns is None else tuple(_ident(c, "columns") for c in columns),
        batch_size=max(1, min(batch, MAX_BATCH)),
        retry_failed=bool(retry.get("enabled", True)),
        max_attempts=int(retry.get("max_attempts", 3)),
        retry_interval_s=float(retry.get("interval_s", 60)),
        lease_timeout_s=float(config.get("lease_timeout_s", 300)),
    )


def row_columns(config: Mapping[str, Any]) -> tuple[str, ...] | None:
    """The column names (unquoted) the config passes as trigger data; None for all."""
    columns = config.get("columns")
    return None if columns is None else tuple(str(c) for c in columns)
