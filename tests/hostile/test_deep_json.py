"""Deeply nested JSON from a sender or an API client cannot stop, crash or wedge anything.

A body nested past `max_json_depth` is still stored and answered 202 (the sender was
authentic), but triggers see it as text and the event says why; the API refuses such
request bodies with 422 and shows any stored event without a 5xx.
"""

from __future__ import annotations

import contextlib
import json
import uuid
from typing import Any

import httpx
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from actions.templating import TemplateError, render
from ingest.pubsub import PushFormatError, parse_push
from schemas import jsonlimits
from schemas.sanitize import has_nul, strip_nul
from tests.conftest import Owner, Receiver, wait_for
from tests.factories import create_endpoint, create_workflow, executions, send
from triggers.filters import evaluate

MAX_DEPTH = 128  # the default max_json_depth, which the test stack uses


def nested(depth: int, leaf: bytes = b"") -> bytes:
    return b"[" * depth + leaf + b"]" * depth


def nested_value(depth: int) -> Any:
    value: Any = "\x00leaf"
    for level in range(depth):
        value = [value] if level % 2 else {"k\x00": value}
    return value


def depth_of(value: Any) -> int:
    """How many containers deep a parsed value nests (iteratively, like the code under test)."""
    deepest, stack = 0, [(value, 0)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, dict | list):
            depth += 1
            deepest = max(deepest, depth)
            stack.extend((child, depth) for child in (node.values() if isinstance(node, dict) else node))
    return deepest


# --- the scanner ---------------------------------------------------------------------------

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(), children, max_size=3),
    max_leaves=30,
)
# Strings full of what the scanner must not count: brackets, quotes and backslashes.
tricky_text = st.text(alphabet='[]{}"\\/ab\n\x00', max_size=12)


@given(json_values, st.booleans(), st.integers(0, 12))
def test_scanner_agrees_with_orjson_on_valid_json(value: Any, ascii_only: bool, limit: int) -> None:
    for document in (orjson.dumps(value), json.dumps(value, ensure_ascii=ascii_only, indent=1).encode()):
        assert jsonlimits.exceeds_depth(document, limit) == (depth_of(orjson.loads(document)) > limit)


@given(st.lists(tricky_text, max_size=5), st.integers(0, 40), st.integers(0, 40))
def test_brackets_inside_strings_never_count(strings: list[str], depth: int, limit: int) -> None:
    document = nested(depth, orjson.dumps(strings))
    assert jsonlimits.exceeds_depth(document, limit) == (depth + 1 > limit)


@given(st.binary(max_size=300), st.integers(0, 5))
def test_scanner_is_total_on_any_bytes(data: bytes, limit: int) -> None:
    assert isinstance(jsonlimits.exceeds_depth(data, limit), bool)
    with contextlib.suppress(orjson.JSONDecodeError):
        jsonlimits.loads(data, limit)


@settings(max_examples=25)
@given(st.integers(0, 5000))
def test_any_depth_parses_or_is_refused_and_never_recurses_out(depth: int) -> None:
    document = nested(depth, b"1")
    if depth > MAX_DEPTH:
        with pytest.raises(jsonlimits.JsonTooDeep):
            jsonlimits.loads(document, MAX_DEPTH)
    else:
        assert depth_of(jsonlimits.loads(document, MAX_DEPTH)) == depth


def test_sanitisers_walk_values_of_any_depth_without_recursion() -> None:
    deep = nested_value(100_000)
    assert has_nul(deep)
    clean = strip_nul(deep)
    assert not has_nul(clean)
    assert depth_of(clean) == jsonlimits.ENCODE_MAX_DEPTH
    assert orjson.loads(orjson.dumps(clean))  # storable: it encodes


def test_template_of_any_depth_renders_or_is_refused_without_recursion() -> None:
    template: Any = "{{ trigger.n }}"
    for _ in range(5000):
        template = {"a": [template, "x"]}
    with pytest.raises(TemplateError, match="nested more than"):
        render(template, {"trigger": {"n": 7}})


def test_template_within_the_depth_limit_renders_every_level() -> None:
    template: Any = "{{ trigger.n }}"
    for _ in range(30):
        template = {"a": [template, "x"]}
    rendered = render(template, {"trigger": {"n": 7}})
    for _ in range(30):
        assert rendered["a"][1] == "x"
        rendered = rendered["a"][0]
    assert rendered == 7


def test_template_errors_name_the_first_bad_field_in_document_order() -> None:
    template = {"a": {"b": "{{ trigger.missing }}"}, "c": "{{ trigger.other }}"}
    with pytest.raises(TemplateError, match=r"^a\.b: "):
        render(template, {"trigger": {}})


def test_filter_equality_on_values_of_any_depth_has_no_recursion() -> None:
    def deep(leaf: int) -> Any:
        value: Any = leaf
        for _ in range(5000):
            value = [{"k": value}]
        return value

    condition = {"path": "body", "op": "equals", "value": deep(1)}
    assert evaluate(condition, {"body": deep(1)}).matched
    assert not evaluate(condition, {"body": deep(2)}).matched


def test_pubsub_push_nested_past_the_limit_is_a_format_error() -> None:
    with pytest.raises(PushFormatError, match="nested deeper than"):
        parse_push(b'{"message": ' + nested(1000) + b"}")


def test_bounded_encoding_clips_what_orjson_refuses() -> None:
    deep = orjson.loads(nested(1000))
    with pytest.raises(orjson.JSONEncodeError):
        orjson.dumps(deep)
    shown = orjson.loads(jsonlimits.dumps_bounded({"body": deep}))
    assert depth_of(shown) == jsonlimits.ENCODE_MAX_DEPTH


# --- signed webhooks through the whole pipeline -------------------------------------------


async def wait_resolved(owner: Owner, event_id: str) -> dict[str, Any]:
    async def resolved() -> dict[str, Any] | None:
        response = await owner.client.get(f"/api/events/{event_id}")
        assert response.status_code == 200, response.text
        event: dict[str, Any] = response.json()
        return event if event["status"] != "received" else None

    result: dict[str, Any] = await wait_for(resolved, timeout=10)
    return result


@pytest.mark.usefixtures("pipeline")
@pytest.mark.parametrize("depth", [300, 1000])
async def test_deep_signed_webhook_is_stored_and_dispatch_continues(
    depth: int, owner: Owner, http: httpx.AsyncClient, receiver: Receiver
) -> None:
    target = f"/target/{uuid.uuid4().hex}"
    endpoint = await create_endpoint(owner.client)
    workflow = await create_workflow(
        owner.client, endpoint["id"], receiver.url + target, action={"body": {"seen": "{{ trigger.body }}"}}
    )

    deep = await send(http, endpoint, nested(depth))
    after = await send(http, endpoint, b'{"n": 1}')

    assert deep.status_code == 202
    event = await wait_resolved(owner, deep.json()["event_id"])
    assert event["status"] == "dispatched"
    assert event["body"] == nested(depth).decode()  # shown as the text triggers saw
    assert f"nested deeper than {MAX_DEPTH} levels" in event["note"]

    async def both_ran() -> bool:
        done = await executions(owner.client, workflow["id"], "succeeded")
        return {x["event_id"] for x in done} == {deep.json()["event_id"], after.json()["event_id"]}

    await wait_for(both_ran, timeout=15)
    sent = [orjson.loads(r.body)["seen"] for r in receiver.to(target)]
    assert nested(depth).decode() in sent  # templates saw the body as text, not a tree


@pytest.mark.usefixtures("pipeline")
async def test_body_within_the_limit_is_still_json(owner: Owner, http: httpx.AsyncClient) -> None:
    endpoint = await create_endpoint(owner.client)
    response = await send(http, endpoint, nested(MAX_DEPTH - 1, b"1"))
    event = await wait_resolved(owner, response.json()["event_id"])
    assert depth_of(event["body"]) == MAX_DEPTH - 1
    assert event["note"] is None


# --- the API -------------------------------------------------------------------------------


@pytest.mark.parametrize("depth", [MAX_DEPTH + 1, 1000])
@pytest.mark.parametrize("path", ["/api/endpoints", "/api/workflows"])
async def test_api_body_nested_past_the_limit_is_422_naming_the_problem(owner: Owner, path: str, depth: int) -> None:
    body = b'{"name": "deep", "x": ' + nested(depth - 1) + b"}"
    response = await owner.client.post(path, content=body, headers={"content-type": "application/json"})
    assert response.status_code == 422, response.text
    assert f"nests deeper than {MAX_DEPTH} levels" in response.json()["error"]["message"]


async def test_event_stored_before_the_limit_is_shown_without_a_5xx(owner: Owner, pool: Any) -> None:
    # A row as older releases stored it: a deep verification record and a deep resolution.
    deep = nested(600).decode()
    async with pool.acquire() as conn:
        event_id = await conn.fetchval(
            "INSERT INTO events (owner_id, source_type, source_id, dedup_key, body, verification, status, resolution) "
            "VALUES ($1, 'webhook', 'old', $2, $3, $4::text::jsonb, 'dispatched', $5::text::jsonb) RETURNING id",
            uuid.UUID(owner.id),
            uuid.uuid4().hex,
            nested(600),
            '{"old": ' + deep + "}",
            deep,
        )
    response = await owner.client.get(f"/api/events/{event_id}")
    assert response.status_code == 200, response.text
    event = response.json()
    assert jsonlimits.TOO_DEEP in json.dumps(event["verification"])
    assert event["body"] == deep
    listed = await owner.client.get("/api/events")
    assert listed.status_code == 200
