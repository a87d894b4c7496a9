"""Hostile templates: malformed ones are refused when saved, bombs are capped when rendered."""

from __future__ import annotations

import contextlib
import string
from typing import Any

import httpx
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from actions.templating import MAX_TEMPLATE_DEPTH, RenderBudget, TemplateError, check_templates, find_paths, render
from tests.conftest import Owner, Receiver, wait_for
from tests.factories import create_endpoint, executions, send
from tests.integration.api_support import workflow_body

# --- parsed when saved -------------------------------------------------------------------------


@pytest.mark.integration
@pytest.mark.parametrize(
    ("config", "field", "position"),
    [
        ({"url": "https://t.example/", "body": {"text": "{{ 7*7 }}"}}, "action.config.body.text", "position 4"),
        ({"url": "https://t.example/{{ trigger.body.id", "body": {}}, "action.config.url", "position 18"),
        ({"url": "https://t.example/", "headers": {"x-a": "{{ }}"}}, "action.config.headers.x-a", "position 0"),
        (
            {"url": "https://t.example/", "body": {"items": ["ok", "{{ a | upper }}"]}},
            "action.config.body.items[1]",
            "position 7",
        ),
    ],
)
async def test_a_malformed_template_is_refused_at_create_naming_field_and_position(
    owner: Owner, config: dict[str, Any], field: str, position: str
) -> None:
    endpoint = await create_endpoint(owner.client)
    body = workflow_body(endpoint["id"], action={"type": "http.request", "config": config})

    response = await owner.client.post("/api/workflows", json=body)

    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["field"] == field
    assert position in error["message"]
    listed = await owner.client.get("/api/workflows")
    assert listed.json()["items"] == []


@pytest.mark.integration
async def test_a_malformed_template_is_refused_at_update_and_the_workflow_is_unchanged(owner: Owner) -> None:
    endpoint = await create_endpoint(owner.client)
    created = await owner.client.post("/api/workflows", json=workflow_body(endpoint["id"]))
    workflow = created.json()
    action = {"type": "http.request", "config": {"url": "https://t.example/", "body": {"text": "{{ 7*7 }}"}}}

    response = await owner.client.patch(f"/api/workflows/{workflow['id']}", json={"action": action})

    assert response.status_code == 422, response.text
    assert response.json()["error"]["field"] == "action.config.body.text"
    again = await owner.client.get(f"/api/workflows/{workflow['id']}")
    assert again.json()["action"] == workflow["action"]


@pytest.mark.integration
async def test_an_action_config_nested_past_the_template_depth_is_refused_not_a_500(owner: Owner) -> None:
    endpoint = await create_endpoint(owner.client)
    nested: Any = "{{ trigger.body }}"
    for _ in range(MAX_TEMPLATE_DEPTH + 5):
        nested = [nested]
    body = workflow_body(
        endpoint["id"], action={"type": "http.request", "config": {"url": "https://t/", "body": nested}}
    )

    response = await owner.client.post("/api/workflows", json=body)

    assert response.status_code == 422, response.text
    assert response.json()["error"]["field"].startswith("action.config.body")
    assert "nested" in response.json()["error"]["message"]


def test_check_templates_walks_a_deep_config_without_recursing() -> None:
    nested: Any = "{{ 7*7 }}"
    for _ in range(50_000):
        nested = {"a": nested}

    with pytest.raises(TemplateError, match="nested more than"):
        check_templates(nested, field="action.config")


# --- parsing never fails in another way ----------------------------------------------------------

_PIECES = st.sampled_from(["{{", "}}", " ", "|", "default", "(", ")", '"', "'", "[", "]", ".", "\\", "-1e5", "trigger"])
_TEMPLATES = st.one_of(
    st.text(max_size=80),
    st.lists(st.one_of(_PIECES, st.text(alphabet=string.printable, max_size=4)), max_size=25).map("".join),
)


@settings(max_examples=400, deadline=None)
@given(_TEMPLATES)
def test_parsing_any_text_raises_nothing_but_template_error(template: str) -> None:
    with contextlib.suppress(TemplateError):
        find_paths({"body": [template]})


@settings(max_examples=200, deadline=None)
@given(_TEMPLATES)
def test_rendering_any_text_raises_nothing_but_template_error(template: str) -> None:
    context = {"trigger": {"body": {"a": [1, "x", None], "b": {"c": "d"}}}}
    with contextlib.suppress(TemplateError):
        render(template, context, budget=RenderBudget(10_000))


# --- rendered output is capped -------------------------------------------------------------------


def test_a_whole_expression_bomb_is_refused_without_encoding_it() -> None:
    # 100,000 references to one 1 KB string: ~100 MB as JSON, a few hundred KB in memory.
    context = {"trigger": {"big": ["x" * 1024] * 100_000}}

    with pytest.raises(TemplateError, match=r"body\.items\[0\].*exceeds 1048576 bytes"):
        render({"items": ["{{ trigger.big }}"]}, context, field="body", budget=RenderBudget(1024 * 1024))


def test_text_expansion_stops_at_the_cap() -> None:
    context = {"trigger": {"blob": "y" * 20_000}}
    template = "{{ trigger.blob }}," * 400  # 8 MB once filled in

    with pytest.raises(TemplateError, match=r"^text: rendered output exceeds 100000 bytes"):
        render(template, context, field="text", budget=RenderBudget(100_000))


def test_the_budget_is_shared_by_every_field_of_one_request() -> None:
    context = {"trigger": {"blob": "z" * 600}}
    budget = RenderBudget(1000)
    render("{{ trigger.blob }}", context, field="url", budget=budget)

    with pytest.raises(TemplateError, match=r"^body: rendered output exceeds 1000 bytes"):
        render("{{ trigger.blob }}", context, field="body", budget=budget)


def test_output_under_the_cap_renders_as_before() -> None:
    context = {"trigger": {"blob": "z" * 600, "n": 3}}

    rendered = render({"a": "{{ trigger.blob }}", "b": "n={{ trigger.n }}"}, context, budget=RenderBudget(1000))

    assert rendered == {"a": "z" * 600, "b": "n=3"}


@pytest.mark.integration
@pytest.mark.usefixtures("pipeline")
async def test_a_template_bomb_fails_the_execution_with_the_cap_error_and_sends_nothing(
    owner: Owner, http: httpx.AsyncClient, receiver: Receiver
) -> None:
    endpoint = await create_endpoint(owner.client)
    target = "/bomb"
    # An 8 KB body template that names 20 KB of trigger data 400 times: 8 MB if filled in.
    bomb = {"text": "{{ trigger.body.blob }} " * 400}
    action = {"type": "http.request", "config": {"url": receiver.url + target, "body": bomb}}
    retry = {"max_attempts": 3, "initial_interval_s": 0.2, "backoff": 1.0, "max_interval_s": 1}
    response = await owner.client.post(
        "/api/workflows", json=workflow_body(endpoint["id"], action=action, retry_policy=retry)
    )
    assert response.status_code == 201, response.text
    workflow = response.json()

    await send(http, endpoint, orjson.dumps({"blob": "b" * 20_000}))
    [execution] = await wait_for(lambda: executions(owner.client, workflow["id"], "failed"))

    assert "body.text: rendered output exceeds 1048576 bytes" in execution["error"]
    assert execution["attempts"] == 1
    assert receiver.to(target) == []
