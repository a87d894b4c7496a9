"""`POST /api/workflows/dry-run` and `/api/workflows/{id}/dry-run`: drafts tried on stored events."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

import asyncpg
import httpx
import jsonschema
import orjson
import pytest

from ingest import dryrun
from ingest.api import definitions
from schemas.store.events import NewEvent, insert_events
from settings import Settings
from tests.conftest import Owner, Receiver
from tests.integration.api_support import (
    create_credential,
    create_endpoint,
    create_workflow,
    stored_event,
    workflow_body,
)
from worker.dispatch.dispatcher import Dispatcher

pytestmark = pytest.mark.integration

OPENED = {"path": "body.action", "op": "equals", "value": "opened"}


def draft(endpoint_id: str, **action_config: Any) -> dict[str, Any]:
    """A create body whose webhook trigger keeps only `opened` events."""
    config = {"url": "https://example.com/orders/{{ trigger.body.order }}", **action_config}
    return workflow_body(
        endpoint_id,
        trigger={"type": "webhook.received", "config": {"endpoint_id": endpoint_id, "filter": OPENED}},
        action={"type": "http.request", "config": config},
    )


async def dry(owner: Owner, body: dict[str, Any], path: str = "/api/workflows/dry-run") -> httpx.Response:
    return await owner.client.post(path, json=body)


async def report_of(owner: Owner, body: dict[str, Any]) -> dict[str, Any]:
    response = await dry(owner, body)
    assert response.status_code == 200, response.text
    report: dict[str, Any] = response.json()
    return report


async def test_a_matching_event_shows_its_trace_and_the_rendered_request(owner: Owner, http: httpx.AsyncClient) -> None:
    endpoint = await create_endpoint(owner)
    event_id = await stored_event(http, endpoint["id"], b'{"action": "opened", "order": 42}')
    body = draft(
        endpoint["id"],
        method="PUT",
        headers={"x-order": "{{ trigger.body.order }}"},
        body={"n": "{{ trigger.body.order }}"},
    )

    report = await report_of(owner, {"workflow": body, "event_ids": [event_id]})

    [result] = report["results"]
    assert (report["events"], report["matched"], report["stopped"]) == (1, 1, None)
    assert result["event"]["id"] == event_id and result["matched"] is True and result["evaluated"] is True
    route, condition = result["trace"]
    assert route["kind"] == "route" and route["matched"] is True
    assert condition == {
        "at": "filter",
        "kind": "condition",
        "matched": True,
        "path": "body.action",
        "op": "equals",
        "expected": "opened",
        "seen": "opened",
    }
    request = result["action"]["request"]
    assert (request["method"], request["url"]) == ("PUT", "https://example.com/orders/42")
    assert request["headers"]["x-order"] == "42"
    assert request["headers"]["content-type"] == "application/json"
    assert request["body"] == {"n": 42}
    assert result["action"]["error"] is None


async def test_a_non_matching_event_says_why_and_renders_nothing(owner: Owner, http: httpx.AsyncClient) -> None:
    endpoint = await create_endpoint(owner)
    event_id = await stored_event(http, endpoint["id"], b'{"action": "closed"}')

    report = await report_of(owner, {"workflow": draft(endpoint["id"]), "event_ids": [event_id]})

    [result] = report["results"]
    assert result["matched"] is False and result["action"] is None
    assert result["reason"] == "body.action is 'closed', expected equals 'opened'"
    assert result["trace"][-1]["seen"] == "closed"


async def test_an_event_from_another_endpoint_fails_the_route(owner: Owner, http: httpx.AsyncClient) -> None:
    listened, other = await create_endpoint(owner), await create_endpoint(owner)
    event_id = await stored_event(http, other["id"], b'{"action": "opened"}')

    report = await report_of(owner, {"workflow": draft(listened["id"]), "event_ids": [event_id]})

    [result] = report["results"]
    assert result["matched"] is False
    assert [step["kind"] for step in result["trace"]] == ["route"]
    assert result["trace"][0]["seen"] == f"webhook:{other['id']}"


async def test_a_template_error_is_shown_for_the_match(owner: Owner, http: httpx.AsyncClient) -> None:
    endpoint = await create_endpoint(owner)
    event_id = await stored_event(http, endpoint["id"], b'{"action": "opened"}')

    report = await report_of(owner, {"workflow": draft(endpoint["id"]), "event_ids": [event_id]})

    action = report["results"][0]["action"]
    assert action["request"] is None
    assert action["error"].startswith("template error:") and "trigger.body.order" in action["error"]


async def test_credential_headers_signatures_and_plain_secrets_are_masked(
    owner: Owner, http: httpx.AsyncClient
) -> None:
    endpoint = await create_endpoint(owner)
    event_id = await stored_event(http, endpoint["id"], b'{"action": "opened", "order": 7}')
    credential = await create_credential(owner, "http", {"bearer_token": "cred-token-secret"})
    body = draft(endpoint["id"], sign=True, headers={"x-api-key": "plain-key-secret", "x-trace": "t"})
    body["action"]["credential_id"] = credential

    response = await dry(owner, {"workflow": body, "event_ids": [event_id]})

    assert response.status_code == 200
    assert "cred-token-secret" not in response.text and "plain-key-secret" not in response.text
    request = response.json()["results"][0]["action"]["request"]
    assert request["headers"]["x-api-key"] == "********"
    assert request["headers"]["webhook-signature"] == "********"
    assert request["headers"]["x-trace"] == "t"
    assert any(credential in note for note in request["notes"])


async def test_a_plain_slack_webhook_url_is_masked(owner: Owner, http: httpx.AsyncClient) -> None:
    endpoint = await create_endpoint(owner)
    event_id = await stored_event(http, endpoint["id"], b'{"action": "opened"}')
    url = "https://hooks.slack.com/services/T000/B000/very-secret-path"
    body = draft(endpoint["id"])
    body["action"] = {"type": "slack.post-message", "config": {"webhook_url": url, "text": "{{ trigger.body.action }}"}}

    response = await dry(owner, {"workflow": body, "event_ids": [event_id]})

    assert response.status_code == 200 and "very-secret-path" not in response.text
    request = response.json()["results"][0]["action"]["request"]
    assert request["url"] == "https://hooks.slack.com/********" and request["body"] == {"text": "opened"}


async def test_actions_without_a_request_shape_show_their_rendered_config(
    owner: Owner, http: httpx.AsyncClient
) -> None:
    endpoint = await create_endpoint(owner)
    event_id = await stored_event(http, endpoint["id"], b'{"action": "opened", "who": "ada@example.com"}')
    credential = await create_credential(owner, "resend", {"api_key": "re_secret_value"})
    body = draft(endpoint["id"])
    body["action"] = {
        "type": "email.send",
        "credential_id": credential,
        "config": {"from": "shop@example.com", "to": "{{ trigger.body.who }}", "subject": "Hi", "text": "Hello"},
    }

    response = await dry(owner, {"workflow": body, "event_ids": [event_id]})

    assert response.status_code == 200, response.text
    assert "re_secret_value" not in response.text
    action = response.json()["results"][0]["action"]
    assert action["request"] is None
    assert action["config"]["to"] == "ada@example.com" and action["config"]["credential_id"] == credential


async def test_nothing_is_saved_sent_or_changed(
    owner: Owner, http: httpx.AsyncClient, pool: asyncpg.Pool, receiver: Receiver
) -> None:
    endpoint = await create_endpoint(owner)
    event_id = await stored_event(http, endpoint["id"], b'{"action": "opened"}')
    target = f"/dry-{uuid.uuid4().hex}"
    body = draft(endpoint["id"], url=receiver.url + target)

    await report_of(owner, {"workflow": body, "event_ids": [event_id]})

    assert (await owner.client.get("/api/workflows")).json()["items"] == []
    assert receiver.to(target) == []
    async with pool.acquire() as conn:
        status = await conn.fetchval("SELECT status FROM events WHERE id = $1", UUID(event_id))
        executions = await conn.fetchval("SELECT count(*) FROM executions WHERE owner_id = $1", UUID(owner.id))
    assert (status, executions) == ("received", 0)


async def test_another_owners_event_ids_are_reported_missing_like_unknown_ones(
    owner: Owner, other_owner: Owner, http: httpx.AsyncClient
) -> None:
    theirs = await stored_event(http, (await create_endpoint(other_owner))["id"], b'{"action": "opened"}')
    endpoint = await create_endpoint(owner)
    unknown = str(uuid.uuid4())

    report = await report_of(owner, {"workflow": draft(endpoint["id"]), "event_ids": [theirs, unknown]})

    assert report["results"] == []
    assert report["missing_event_ids"] == [theirs, unknown]


async def test_since_and_limit_pick_the_owners_newest_events(
    owner: Owner, other_owner: Owner, http: httpx.AsyncClient
) -> None:
    endpoint = await create_endpoint(owner)
    await stored_event(http, (await create_endpoint(other_owner))["id"], b'{"action": "opened"}')
    ids = [await stored_event(http, endpoint["id"], f'{{"n": {n}}}'.encode()) for n in range(3)]
    since = (datetime.now(UTC) - timedelta(minutes=5)).isoformat()

    newest_two = await report_of(owner, {"workflow": draft(endpoint["id"]), "since": since, "limit": 2})
    later = await report_of(owner, {"workflow": draft(endpoint["id"]), "since": datetime.now(UTC).isoformat()})

    assert [r["event"]["id"] for r in newest_two["results"]] == [ids[2], ids[1]]
    assert later["results"] == []


@pytest.mark.parametrize(
    ("extra", "field"),
    [
        ({"limit": dryrun.MAX_EVENTS + 1}, "limit"),
        ({"limit": 0}, "limit"),
        ({"event_ids": []}, "event_ids"),
        ({"event_ids": [str(uuid.uuid4()) for _ in range(dryrun.MAX_EVENTS + 1)]}, "event_ids"),
        ({"event_ids": ["not-a-uuid"]}, "event_ids[0]"),
        ({"event_ids": [str(uuid.uuid4())], "since": "2026-01-01T00:00:00Z"}, "since"),
        ({"since": "yesterday"}, "since"),
        ({"since": "2026-01-01T00:00:00"}, "since"),
        ({"surprise": 1}, "surprise"),
    ],
)
async def test_a_bad_choice_of_events_is_422_naming_the_field(owner: Owner, extra: dict[str, Any], field: str) -> None:
    endpoint = await create_endpoint(owner)

    response = await dry(owner, {"workflow": draft(endpoint["id"]), **extra})

    assert response.status_code == 422, response.text
    assert response.json()["error"]["field"] == field


@pytest.mark.parametrize(
    ("change", "field"),
    [
        (lambda b: b.pop("name"), "workflow.name"),
        (lambda b: b["action"].update(type="nope.nothing"), "workflow.action.type"),
        (lambda b: b["action"]["config"].update(url=5), "workflow.action.config.url"),
        (lambda b: b["action"]["config"].update(url="https://x/{{ trigger.body.a"), "workflow.action.config.url"),
        (lambda b: b["trigger"]["config"].update(filter={"path": "body", "op": "bigger"}), "workflow.trigger.config"),
        (lambda b: b["action"].update(credential_id=str(uuid.uuid4())), "workflow.action.credential_id"),
    ],
)
async def test_an_invalid_workflow_is_422_as_create_would_answer(owner: Owner, change: Any, field: str) -> None:
    endpoint = await create_endpoint(owner)
    body = draft(endpoint["id"])
    change(body)
    created = await owner.client.post("/api/workflows", json=body)

    response = await dry(owner, {"workflow": body})

    assert (created.status_code, response.status_code) == (422, 422)
    assert response.json()["error"]["field"].startswith(field)
    assert response.json()["error"]["field"] == f"workflow.{created.json()['error']['field']}"


async def test_another_owners_endpoint_is_422_as_on_create(owner: Owner, other_owner: Owner) -> None:
    theirs = await create_endpoint(other_owner)

    response = await dry(owner, {"workflow": draft(theirs["id"])})

    assert response.status_code == 422
    assert response.json()["error"]["field"] == "workflow.trigger.config.endpoint_id"


async def test_a_missing_workflow_is_422(owner: Owner) -> None:
    response = await dry(owner, {"limit": 5})

    assert response.status_code == 422 and response.json()["error"]["field"] == "workflow"


# --- a saved workflow with a proposed patch -----------------------------------------------


async def test_a_patch_is_tried_on_the_saved_workflow_without_saving_it(owner: Owner, http: httpx.AsyncClient) -> None:
    endpoint = await create_endpoint(owner)
    closed = {"path": "body.action", "op": "equals", "value": "closed"}
    trigger = {"type": "webhook.received", "config": {"endpoint_id": endpoint["id"], "filter": closed}}
    saved = await create_workflow(owner, endpoint["id"], trigger=trigger)
    event_id = await stored_event(http, endpoint["id"], b'{"action": "opened", "order": 1}')
    proposed = {**trigger, "config": {**trigger["config"], "filter": OPENED}}

    before = await dry(owner, {"event_ids": [event_id]}, f"/api/workflows/{saved['id']}/dry-run")
    after = await dry(
        owner, {"patch": {"trigger": proposed}, "event_ids": [event_id]}, f"/api/workflows/{saved['id']}/dry-run"
    )

    assert before.json()["matched"] == 0 and after.json()["matched"] == 1
    assert after.json()["results"][0]["action"]["request"]["url"] == "https://example.com/hook"
    assert (await owner.client.get(f"/api/workflows/{saved['id']}")).json() == {**saved}


async def test_the_patch_keeps_the_saved_action_and_renders_the_workflow_id(
    owner: Owner, http: httpx.AsyncClient
) -> None:
    endpoint = await create_endpoint(owner)
    action = {"type": "http.request", "config": {"url": "https://example.com/{{ workflow.id }}"}}
    saved = await create_workflow(owner, endpoint["id"], action=action)
    event_id = await stored_event(http, endpoint["id"])

    response = await dry(
        owner, {"patch": {"name": "renamed"}, "event_ids": [event_id]}, f"/api/workflows/{saved['id']}/dry-run"
    )

    report = response.json()
    assert report["workflow"]["name"] == "renamed"
    assert report["results"][0]["action"]["request"]["url"] == f"https://example.com/{saved['id']}"


async def test_another_owners_workflow_is_404(owner: Owner, other_owner: Owner) -> None:
    theirs = await create_workflow(other_owner, (await create_endpoint(other_owner))["id"])

    response = await dry(owner, {}, f"/api/workflows/{theirs['id']}/dry-run")

    assert response.status_code == 404


async def test_an_invalid_patch_is_422_inside_patch(owner: Owner) -> None:
    saved = await create_workflow(owner, (await create_endpoint(owner))["id"])

    response = await dry(owner, {"patch": {"concurrency_limit": 0}}, f"/api/workflows/{saved['id']}/dry-run")

    assert response.status_code == 422 and response.json()["error"]["field"] == "patch.concurrency_limit"


# --- bounds (the module the console calls) ------------------------------------------------


async def _draft_and_events(owner: Owner, http: httpx.AsyncClient, pool: asyncpg.Pool, count: int) -> Any:
    endpoint = await create_endpoint(owner)
    ids = [await stored_event(http, endpoint["id"], b'{"action": "opened", "order": 1}') for _ in range(count)]
    async with pool.acquire() as conn:
        workflow = await definitions.validated_create(conn, UUID(owner.id), draft(endpoint["id"]))
    return workflow, [UUID(i) for i in ids]


async def test_past_the_deadline_events_are_listed_as_not_evaluated(
    owner: Owner, http: httpx.AsyncClient, pool: asyncpg.Pool
) -> None:
    workflow, ids = await _draft_and_events(owner, http, pool, 2)

    report = await dryrun.dry_run(
        pool, UUID(owner.id), workflow, event_ids=ids, since=None, limit=50, limits=dryrun.DryRunLimits(deadline_s=0)
    )

    assert report.stopped == "deadline"
    assert [(r.event_id, r.evaluated, r.matched) for r in report.results] == [(i, False, False) for i in ids]


async def test_past_the_output_budget_matches_are_not_rendered(
    owner: Owner, http: httpx.AsyncClient, pool: asyncpg.Pool
) -> None:
    workflow, ids = await _draft_and_events(owner, http, pool, 2)

    report = await dryrun.dry_run(
        pool,
        UUID(owner.id),
        workflow,
        event_ids=ids,
        since=None,
        limit=50,
        limits=dryrun.DryRunLimits(max_output_bytes=1),
    )

    first, second = (r.action for r in report.results)
    assert first is not None and first.request is not None
    assert second is not None and second.request is None and "output limit" in (second.error or "")
    assert report.stopped == "output_limit" and report.matched == 2


async def test_a_request_larger_than_max_rendered_bytes_is_the_error_an_attempt_would_get(
    owner: Owner, http: httpx.AsyncClient, pool: asyncpg.Pool
) -> None:
    endpoint = await create_endpoint(owner)
    event_id = await stored_event(
        http, endpoint["id"], orjson.dumps({"action": "opened", "order": 1, "big": "x" * 5000})
    )
    async with pool.acquire() as conn:
        workflow = await definitions.validated_create(
            conn, UUID(owner.id), draft(endpoint["id"], body="{{ trigger.body.big }}")
        )

    report = await dryrun.dry_run(
        pool,
        UUID(owner.id),
        workflow,
        event_ids=[UUID(event_id)],
        since=None,
        limit=50,
        limits=dryrun.DryRunLimits(max_rendered_bytes=1000),
    )

    action = report.results[0].action
    assert action is not None and action.request is None and "1000" in (action.error or "")


async def test_the_report_serialises_as_the_api_answers(
    owner: Owner, http: httpx.AsyncClient, pool: asyncpg.Pool
) -> None:
    workflow, ids = await _draft_and_events(owner, http, pool, 1)

    report = await dryrun.dry_run(pool, UUID(owner.id), workflow, event_ids=ids, since=None, limit=50)

    shown = orjson.loads(orjson.dumps(report.to_json()))
    assert shown["matched"] == 1 and shown["results"][0]["event"]["id"] == str(ids[0])


# --- the trace recorded at resolution -----------------------------------------------------


async def test_resolution_records_the_same_trace_as_a_dry_run(
    owner: Owner, http: httpx.AsyncClient, pool: asyncpg.Pool, settings: Settings
) -> None:
    endpoint = await create_endpoint(owner)
    body = draft(endpoint["id"], url="https://example.com/hook")
    saved = (await owner.client.post("/api/workflows", json=body)).json()
    event_id = await stored_event(http, endpoint["id"], b'{"action": "opened"}')
    dispatcher = Dispatcher(pool, settings)

    while (await owner.client.get(f"/api/events/{event_id}")).json()["status"] == "received":
        assert await dispatcher.resolve_once() > 0

    [candidate] = (await owner.client.get(f"/api/events/{event_id}")).json()["resolution"]
    dry_report = await report_of(owner, {"workflow": body, "event_ids": [event_id]})
    assert candidate["workflow_id"] == saved["id"] and candidate["matched"] is True
    assert candidate["trace"] == dry_report["results"][0]["trace"][1:]  # the dry run adds the route


# --- the OpenAPI document -----------------------------------------------------------------


async def test_the_openapi_document_declares_both_dry_runs(http: httpx.AsyncClient) -> None:
    document = (await http.get("/api/openapi.json")).json()

    draft_op = document["paths"]["/api/workflows/dry-run"]["post"]
    saved_op = document["paths"]["/api/workflows/{id}/dry-run"]["post"]
    schemas = document["components"]["schemas"]
    assert draft_op["requestBody"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/DryRunRequest"
    }
    assert saved_op["requestBody"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/DryRunPatchRequest"
    }
    for op in (draft_op, saved_op):
        assert op["responses"]["200"]["content"]["application/json"]["schema"] == {
            "$ref": "#/components/schemas/DryRunReport"
        }
        assert {"401", "413", "422", "503"} <= set(op["responses"])
    assert "404" in saved_op["responses"]
    assert schemas["DryRunRequest"]["properties"]["workflow"] == {"$ref": "#/components/schemas/WorkflowCreate"}
    assert schemas["DryRunRequest"]["properties"]["limit"]["maximum"] == dryrun.MAX_EVENTS
    assert "TraceStep" in schemas


async def test_answers_satisfy_the_documented_report_schema(owner: Owner, http: httpx.AsyncClient) -> None:
    endpoint = await create_endpoint(owner)
    other = await create_endpoint(owner)
    ids = [
        await stored_event(http, endpoint["id"], b'{"action": "opened", "order": 1}'),
        await stored_event(http, endpoint["id"], b'{"action": "opened"}'),
        await stored_event(http, endpoint["id"], b'{"action": "closed"}'),
        await stored_event(http, other["id"], b'{"action": "opened"}'),
        str(uuid.uuid4()),
    ]
    document = (await http.get("/api/openapi.json")).json()
    validator = jsonschema.Draft202012Validator(
        {"$ref": "#/components/schemas/DryRunReport", "components": document["components"]}
    )

    report = await report_of(owner, {"workflow": draft(endpoint["id"], sign=True), "event_ids": ids})

    assert [r["matched"] for r in report["results"]] == [True, True, False, False]
    assert list(validator.iter_errors(report)) == []


async def test_a_draft_schedule_says_it_fires_only_once_saved(owner: Owner, http: httpx.AsyncClient) -> None:
    endpoint = await create_endpoint(owner)
    event_id = await stored_event(http, endpoint["id"])
    body = workflow_body(endpoint["id"], trigger={"type": "schedule.cron", "config": {"interval_s": 3600}})

    report = await report_of(owner, {"workflow": body, "event_ids": [event_id]})

    [result] = report["results"]
    assert result["matched"] is False and "saved workflow" in result["reason"]


async def test_a_saved_tick_workflow_matches_its_own_ticks(owner: Owner, pool: asyncpg.Pool) -> None:
    endpoint = await create_endpoint(owner)
    trigger = {"type": "schedule.tick", "config": {"auth": "hmac", "endpoint_id": endpoint["id"]}}
    saved = await create_workflow(owner, endpoint["id"], trigger=trigger)
    tick = NewEvent(
        UUID(owner.id), "tick", saved["id"], uuid.uuid4().hex, {}, b'{"scheduled_time": "2026-01-01T00:00:00Z"}'
    )
    async with pool.acquire() as conn:
        [stored] = (await insert_events(conn, [tick])).values()

    response = await dry(owner, {"event_ids": [str(stored.event_id)]}, f"/api/workflows/{saved['id']}/dry-run")

    assert response.json()["matched"] == 1, response.text
