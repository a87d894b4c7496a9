"""Creating Gmail workflows through the API: the mailbox must be the owner's own Google
account with Gmail read access, and the send action's credential one allowed to send."""

from __future__ import annotations

from typing import Any

import pytest

from schemas.store.credentials import insert_api_key
from tests.gmail_support import READ_SCOPE, SEND_SCOPE, connect_google, unique_email

pytestmark = pytest.mark.integration


def body(mailbox: str, **trigger: Any) -> dict[str, Any]:
    return {
        "name": "mail",
        "trigger": {"type": "gmail.receive-email", "config": {"mailbox": mailbox, **trigger}},
        "action": {"type": "http.request", "config": {"url": "https://example.test/in"}},
    }


async def test_a_workflow_on_the_owners_own_mailbox_is_created(owner, pool, keyring) -> None:
    mailbox = await connect_google(pool, keyring, owner.id, unique_email(), "t", mailbox=False)
    response = await owner.client.post("/api/workflows", json=body(mailbox.upper(), label_ids=["INBOX", "Label_3"]))
    assert response.status_code == 201, response.text


async def test_another_owners_mailbox_is_refused(owner, other_owner, pool, keyring) -> None:
    theirs = await connect_google(pool, keyring, other_owner.id, unique_email(), "t", mailbox=False)
    response = await owner.client.post("/api/workflows", json=body(theirs))
    assert response.status_code == 422
    assert response.json()["error"]["field"] == "trigger.config.mailbox"
    assert "no such credential" in response.json()["error"]["message"]


async def test_a_google_account_without_gmail_read_access_is_refused(owner, pool, keyring) -> None:
    send_only = await connect_google(pool, keyring, owner.id, unique_email(), "t", scopes=(SEND_SCOPE,), mailbox=False)
    response = await owner.client.post("/api/workflows", json=body(send_only))
    assert response.status_code == 422
    assert "without Gmail read access" in response.json()["error"]["message"]


async def test_a_non_google_credential_is_refused_as_mailbox(owner, pool, keyring) -> None:
    async with pool.acquire() as conn:
        row = await insert_api_key(conn, keyring, owner.id, "slack", "bot", {"bot_token": "xoxb-1"})
    response = await owner.client.post("/api/workflows", json=body(str(row.id)))
    assert response.status_code == 422
    assert "not a connected Google account" in response.json()["error"]["message"]


@pytest.mark.parametrize(
    "trigger",
    [{"label_ids": []}, {"label_ids": ["has space"]}, {"has_attachment": "yes"}, {"subject": ""}, {"unknown": 1}],
)
async def test_malformed_trigger_configs_are_refused_before_any_lookup(owner, trigger: dict[str, Any]) -> None:
    response = await owner.client.post("/api/workflows", json=body("00000000-0000-0000-0000-000000000001", **trigger))
    assert response.status_code == 422, response.text


async def test_the_send_action_needs_a_google_account_allowed_to_send(owner, pool, keyring) -> None:
    read_only = await connect_google(
        pool, keyring, owner.id, unique_email(), "t", scopes=(READ_SCOPE.replace("modify", "readonly"),), mailbox=False
    )
    response = await owner.client.post(
        "/api/workflows",
        json={
            "name": "reply",
            "trigger": {"type": "gmail.receive-email", "config": {"mailbox": read_only}},
            "action": {
                "type": "gmail.send-email",
                "credential_id": read_only,
                "config": {"to": "{{ trigger.from }}", "subject": "Re", "text": "ok"},
            },
        },
    )
    assert response.status_code == 422
    assert response.json()["error"]["field"] == "action.credential_id"
