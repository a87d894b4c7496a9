"""Secrets out of plain config: `http` and `slack_webhook` credentials end to end.

The real API, dispatcher and worker; a local receiver stands in for the http.request target
and respx for Slack. Each test checks that the receiver got the secret and the API never shows it.
"""

from __future__ import annotations

import base64
import logging
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import respx

from tests.conftest import Owner, Receiver, wait_for
from tests.factories import create_endpoint, executions, send
from tests.integration.api_support import create_credential, workflow_body

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("pipeline")]

SLACK_HOOK = "https://hooks.slack.com/services/T000/B000/sl4ck-w3bh00k-s3cret"


async def http_workflow(owner: Owner, endpoint_id: str, config: dict[str, Any], credential_id: str | None) -> str:
    action = {"type": "http.request", "config": config, "credential_id": credential_id}
    response = await owner.client.post("/api/workflows", json=workflow_body(endpoint_id, action=action))
    assert response.status_code == 201, response.text
    workflow_id: str = response.json()["id"]
    return workflow_id


async def everything_the_api_shows(owner: Owner, workflow_id: str, credential_id: str) -> str:
    """Every API answer about the workflow, its credential and its executions, as one text."""
    paths = [
        "/api/workflows",
        f"/api/workflows/{workflow_id}",
        f"/api/workflows/{workflow_id}/executions",
        "/api/credentials",
        f"/api/credentials/{credential_id}",
    ]
    texts = [(await owner.client.get(path)).text for path in paths]
    for execution in await executions(owner.client, workflow_id):
        texts.append((await owner.client.get(f"/api/executions/{execution['id']}")).text)
    return "\n".join(texts)


@pytest.mark.parametrize(
    ("secret", "header", "expected"),
    [
        ({"header": "X-Api-Key", "value": "k3y-s3cret-1"}, "x-api-key", "k3y-s3cret-1"),
        ({"bearer_token": "b3arer-s3cret-2"}, "authorization", "Bearer b3arer-s3cret-2"),
        (
            {"username": "ada", "password": "p4ss-s3cret-3"},
            "authorization",
            "Basic " + base64.b64encode(b"ada:p4ss-s3cret-3").decode(),
        ),
    ],
)
async def test_http_request_sends_the_stored_credential_and_the_api_never_shows_it(
    owner: Owner,
    http: httpx.AsyncClient,
    receiver: Receiver,
    caplog: pytest.LogCaptureFixture,
    secret: dict[str, str],
    header: str,
    expected: str,
) -> None:
    caplog.set_level(logging.DEBUG)
    target = f"/credential-{header}-{len(receiver.requests)}"
    # A target that echoes what it got must not smuggle the secret into the stored result.
    receiver.bodies[target] = f'{{"you sent": "{expected}"}}'.encode()
    credential_id = await create_credential(owner, "http", secret)
    endpoint = await create_endpoint(owner.client)
    config = {"url": receiver.url + target, "body": {"n": "{{ trigger.body.n }}"}}
    workflow_id = await http_workflow(owner, endpoint["id"], config, credential_id)

    await send(http, endpoint, b'{"n": 1}')
    [execution] = await wait_for(lambda: executions(owner.client, workflow_id, "succeeded"))

    [request] = receiver.to(target)
    assert request.headers[header] == expected
    shown = await everything_the_api_shows(owner, workflow_id, credential_id)
    assert execution["id"] in shown
    logged = "\n".join(record.getMessage() for record in caplog.records)
    for value in [*secret.values(), expected]:
        if value not in ("ada", "X-Api-Key"):
            assert value not in shown
            assert value not in logged


async def test_the_credential_replaces_a_plain_header_of_the_same_name(
    owner: Owner, http: httpx.AsyncClient, receiver: Receiver
) -> None:
    target = "/credential-wins"
    credential_id = await create_credential(owner, "http", {"bearer_token": "fr3sh"})
    endpoint = await create_endpoint(owner.client)
    config = {"url": receiver.url + target, "headers": {"Authorization": "Bearer stale"}}
    workflow_id = await http_workflow(owner, endpoint["id"], config, credential_id)

    await send(http, endpoint, b"{}")
    await wait_for(lambda: executions(owner.client, workflow_id, "succeeded"))

    [request] = receiver.to(target)
    assert request.headers["authorization"] == "Bearer fr3sh"


async def test_a_plain_authorization_header_keeps_working_and_is_flagged(
    owner: Owner, http: httpx.AsyncClient, receiver: Receiver
) -> None:
    target = "/plain-auth"
    endpoint = await create_endpoint(owner.client)
    config = {"url": receiver.url + target, "headers": {"Authorization": "Bearer plain"}}
    workflow_id = await http_workflow(owner, endpoint["id"], config, None)

    listed = await owner.client.get("/api/workflows")
    [shown] = [w for w in listed.json()["items"] if w["id"] == workflow_id]
    assert shown["warnings"] == [
        "action.config.headers.Authorization holds a secret in plain config; move it to an http credential"
    ]
    await send(http, endpoint, b"{}")
    await wait_for(lambda: executions(owner.client, workflow_id, "succeeded"))
    assert receiver.to(target)[0].headers["authorization"] == "Bearer plain"


async def test_a_workflow_using_a_credential_has_no_warnings(owner: Owner) -> None:
    credential_id = await create_credential(owner, "http", {"bearer_token": "t0ken"})
    endpoint = await create_endpoint(owner.client)
    workflow_id = await http_workflow(owner, endpoint["id"], {"url": "https://t.example/"}, credential_id)

    shown = (await owner.client.get(f"/api/workflows/{workflow_id}")).json()

    assert shown["warnings"] == []


@pytest.mark.parametrize(
    ("secret", "field"),
    [
        ({"header": "X Bad Name", "value": "v4lue-one"}, "secret.header"),
        ({"header": "X-Key", "value": "v4lue\r\nX-Injected: two"}, "secret.value"),
        ({"bearer_token": "v4lue\nthree"}, "secret.bearer_token"),
        ({"username": "a:b", "password": "v4lue-four"}, "secret.username"),
        ({"bearer_token": "v4lue-five", "password": "v4lue-six"}, "secret"),
        ({"header": "X-Key"}, "secret"),
    ],
)
async def test_an_unusable_http_credential_is_refused_without_echoing_it(
    owner: Owner, secret: dict[str, str], field: str
) -> None:
    response = await owner.client.post("/api/credentials", json={"provider": "http", "secret": secret})

    assert response.status_code == 422, response.text
    assert response.json()["error"]["field"] == field
    assert "v4lue" not in response.text


async def test_http_request_refuses_a_credential_of_another_provider(owner: Owner) -> None:
    credential_id = await create_credential(owner, "novu", {"api_key": "n0vu"})
    endpoint = await create_endpoint(owner.client)
    action = {"type": "http.request", "config": {"url": "https://t.example/"}, "credential_id": credential_id}

    response = await owner.client.post("/api/workflows", json=workflow_body(endpoint["id"], action=action))

    assert response.status_code == 422
    assert response.json()["error"]["field"] == "action.credential_id"


# --- Slack incoming webhooks ----------------------------------------------------------------------


@pytest.fixture
def slack() -> Iterator[respx.MockRouter]:
    """Slack stood in; hookyard's own servers on 127.0.0.1 are reached for real."""
    with respx.mock(assert_all_called=False) as mock:
        mock.route(host="127.0.0.1").pass_through()
        yield mock


async def test_slack_posts_through_a_stored_incoming_webhook_and_the_api_never_shows_it(
    owner: Owner, http: httpx.AsyncClient, slack: respx.MockRouter
) -> None:
    hook = slack.post(SLACK_HOOK).respond(200, text="ok")
    credential_id = await create_credential(owner, "slack_webhook", {"url": SLACK_HOOK})
    endpoint = await create_endpoint(owner.client)
    action = {
        "type": "slack.post-message",
        "credential_id": credential_id,
        "config": {"text": "order {{ trigger.body.order }}"},
    }
    response = await owner.client.post("/api/workflows", json=workflow_body(endpoint["id"], action=action))
    assert response.status_code == 201, response.text
    workflow_id = response.json()["id"]

    await send(http, endpoint, b'{"order": "A-9"}')
    [execution] = await wait_for(lambda: executions(owner.client, workflow_id, "succeeded"))

    assert hook.calls.last.request.content == b'{"text":"order A-9"}'
    assert execution["result"]["via"] == "incoming_webhook"
    shown = await everything_the_api_shows(owner, workflow_id, credential_id)
    assert "sl4ck-w3bh00k-s3cret" not in shown
    assert response.json()["warnings"] == []


async def test_a_slack_webhook_credential_must_be_a_slack_incoming_webhook_url(owner: Owner) -> None:
    response = await owner.client.post(
        "/api/credentials", json={"provider": "slack_webhook", "secret": {"url": "https://evil.example/x"}}
    )

    assert response.status_code == 422
    assert response.json()["error"]["field"] == "secret.url"
    assert "evil.example" not in response.text


async def test_a_plain_slack_webhook_url_keeps_working_and_is_flagged(owner: Owner) -> None:
    endpoint = await create_endpoint(owner.client)
    action = {"type": "slack.post-message", "config": {"text": "hi", "webhook_url": SLACK_HOOK}}

    response = await owner.client.post("/api/workflows", json=workflow_body(endpoint["id"], action=action))

    assert response.status_code == 201, response.text
    assert response.json()["warnings"] == [
        "action.config.webhook_url holds a secret in plain config; move it to a slack_webhook credential"
    ]
    assert "sl4ck-w3bh00k-s3cret" not in response.text
