"""Bad requests: authentication, malformed JSON and workflow bodies answered with the field at fault."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.conftest import Owner
from tests.integration.api_support import create_endpoint, workflow_body

pytestmark = pytest.mark.integration


async def _rejected(owner: Owner, body: dict[str, Any]) -> dict[str, Any]:
    response = await owner.client.post("/api/workflows", json=body)
    assert response.status_code == 422, response.text
    error: dict[str, Any] = response.json()["error"]
    assert error["code"] == "invalid"
    return error


async def test_request_without_an_api_key_is_401(http: httpx.AsyncClient) -> None:
    response = await http.get("/api/workflows")

    assert response.status_code == 401
    assert response.json()["error"]["code"] == "unauthorized"


async def test_request_with_a_wrong_api_key_is_401(http: httpx.AsyncClient) -> None:
    response = await http.get("/api/endpoints", headers={"authorization": "Bearer hy_not-a-real-key"})

    assert response.status_code == 401


async def test_malformed_json_is_400(owner: Owner) -> None:
    response = await owner.client.post(
        "/api/workflows", content=b'{"name": ', headers={"content-type": "application/json"}
    )

    assert response.status_code == 400
    assert response.json()["error"]["code"] == "bad_request"


async def test_json_that_is_not_an_object_is_422(owner: Owner) -> None:
    response = await owner.client.post("/api/endpoints", json=["a", "list"])

    assert response.status_code == 422


async def test_missing_required_field_is_named(owner: Owner) -> None:
    endpoint = await create_endpoint(owner)
    body = workflow_body(endpoint["id"])
    del body["action"]

    error = await _rejected(owner, body)

    assert error["field"] == "action"


async def test_unexpected_field_is_named(owner: Owner) -> None:
    endpoint = await create_endpoint(owner)

    error = await _rejected(owner, workflow_body(endpoint["id"], colour="blue"))

    assert error["field"] == "colour"


async def test_bad_endpoint_id_format_names_the_config_field(owner: Owner) -> None:
    body = workflow_body("not-a-uuid")

    error = await _rejected(owner, body)

    assert error["field"] == "trigger.config.endpoint_id"


async def test_endpoint_of_another_owner_names_the_config_field(owner: Owner, other_owner: Owner) -> None:
    theirs = await create_endpoint(other_owner)

    error = await _rejected(owner, workflow_body(theirs["id"]))

    assert error["field"] == "trigger.config.endpoint_id"


async def test_unknown_trigger_type_lists_the_known_types(owner: Owner) -> None:
    endpoint = await create_endpoint(owner)
    body = workflow_body(endpoint["id"], trigger={"type": "email.received", "config": {}})

    error = await _rejected(owner, body)

    assert error["field"] == "trigger.type"
    assert "webhook.received" in error["message"]


async def test_unknown_action_type_lists_the_known_types(owner: Owner) -> None:
    endpoint = await create_endpoint(owner)
    body = workflow_body(endpoint["id"], action={"type": "smtp.send", "config": {}})

    error = await _rejected(owner, body)

    assert error["field"] == "action.type"
    assert "http.request" in error["message"]


async def test_bad_action_url_type_names_the_config_field(owner: Owner) -> None:
    endpoint = await create_endpoint(owner)
    body = workflow_body(endpoint["id"], action={"type": "http.request", "config": {"url": 42}})

    error = await _rejected(owner, body)

    assert error["field"] == "action.config.url"


async def test_bad_filter_op_names_the_filter_field(owner: Owner) -> None:
    endpoint = await create_endpoint(owner)
    config = {"endpoint_id": endpoint["id"], "filter": {"path": "body.type", "op": "bigger", "value": 1}}
    trigger = {"type": "webhook.received", "config": config}

    error = await _rejected(owner, workflow_body(endpoint["id"], trigger=trigger))

    assert error["field"] == "trigger.config.filter.op"


async def test_nested_filter_errors_name_the_list_position(owner: Owner) -> None:
    endpoint = await create_endpoint(owner)
    node = {"all": [{"path": "body.n", "op": "exists"}, {"path": "body.n", "op": "gt", "value": "big"}]}
    config = {"endpoint_id": endpoint["id"], "filter": node}
    trigger = {"type": "webhook.received", "config": config}

    error = await _rejected(owner, workflow_body(endpoint["id"], trigger=trigger))

    assert error["field"] == "trigger.config.filter.all[1].value"


async def test_rejected_values_are_not_echoed(owner: Owner) -> None:
    endpoint = await create_endpoint(owner)
    token = "Bearer sk_live_very_secret_token"
    action = {"type": "http.request", "config": {"url": "https://example.com", "headers": [token]}}

    error = await _rejected(owner, workflow_body(endpoint["id"], action=action))

    assert error["field"] == "action.config.headers"
    assert token not in error["message"]


@pytest.mark.parametrize(
    ("override", "field"),
    [
        ({"concurrency_limit": 0}, "concurrency_limit"),
        ({"concurrency_limit": 1001}, "concurrency_limit"),
        ({"retry_policy": {"max_attempts": 51}}, "retry_policy.max_attempts"),
        ({"retry_policy": {"initial_interval_s": 0.01}}, "retry_policy.initial_interval_s"),
        ({"retry_policy": {"backoff": 11}}, "retry_policy.backoff"),
        ({"retry_policy": {"max_interval_s": 86401}}, "retry_policy.max_interval_s"),
        ({"name": ""}, "name"),
        ({"active": "yes"}, "active"),
    ],
)
async def test_out_of_range_settings_name_the_field(owner: Owner, override: dict[str, Any], field: str) -> None:
    endpoint = await create_endpoint(owner)

    error = await _rejected(owner, workflow_body(endpoint["id"], **override))

    assert error["field"] == field


async def test_credential_id_must_be_a_uuid(owner: Owner) -> None:
    endpoint = await create_endpoint(owner)
    action = {"type": "http.request", "config": {"url": "https://example.com"}, "credential_id": "cred-1"}

    error = await _rejected(owner, workflow_body(endpoint["id"], action=action))

    assert error["field"] == "action.credential_id"


async def test_patch_with_an_invalid_field_changes_nothing(owner: Owner) -> None:
    endpoint = await create_endpoint(owner)
    created = (await owner.client.post("/api/workflows", json=workflow_body(endpoint["id"]))).json()

    response = await owner.client.patch(f"/api/workflows/{created['id']}", json={"name": "ok", "concurrency_limit": -1})

    assert response.status_code == 422
    assert (await owner.client.get(f"/api/workflows/{created['id']}")).json()["name"] == "notify"


async def test_nul_character_in_a_name_is_rejected_with_422(owner) -> None:
    response = await owner.client.post("/api/endpoints", json={"name": "bad\u0000name"})
    assert response.status_code == 422


async def test_out_of_range_cursor_is_rejected_with_400(owner) -> None:
    import base64

    cursor = base64.urlsafe_b64encode(b"s99999999999999999999999").decode().rstrip("=")
    response = await owner.client.get("/api/endpoints", params={"cursor": cursor})
    assert response.status_code == 400
