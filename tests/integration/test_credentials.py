"""Credentials: API-key credentials, encryption at rest, rotation, owner isolation."""

from __future__ import annotations

from uuid import UUID

import asyncpg
import httpx
import pytest

from oauth.crypto import DecryptionFailed, Keyring, generate_key
from schemas.store import credentials as store
from schemas.store import master_keys as keys
from tests.conftest import MASTER_KEY, Owner

RESEND = {"provider": "resend", "name": "marketing", "secret": {"api_key": "re_live_SECRET_123"}}


async def test_api_key_credential_is_created_without_echoing_the_secret(owner: Owner) -> None:
    response = await owner.client.post("/api/credentials", json=RESEND)
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["provider"] == "resend" and body["kind"] == "api_key" and body["status"] == "active"
    assert "re_live_SECRET_123" not in response.text


async def test_secret_is_stored_encrypted(owner: Owner, pool: asyncpg.Pool) -> None:
    created = (await owner.client.post("/api/credentials", json=RESEND)).json()
    stored = await pool.fetchval("SELECT secret FROM credentials WHERE id = $1::uuid", created["id"])
    assert stored.startswith("v1.") and "re_live_SECRET_123" not in stored


async def test_get_and_list_show_status_but_never_secrets(owner: Owner) -> None:
    created = (await owner.client.post("/api/credentials", json=RESEND)).json()
    one = await owner.client.get(f"/api/credentials/{created['id']}")
    listed = await owner.client.get("/api/credentials")
    assert one.status_code == 200 and one.json()["name"] == "marketing"
    assert [c["id"] for c in listed.json()["items"]] == [created["id"]]
    assert "SECRET" not in one.text + listed.text


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"provider": "resend", "secret": {"token": "x"}}, "secret"),
        ({"provider": "resend", "secret": {}}, "secret"),
        ({"provider": "google", "secret": {"api_key": "x"}}, "provider"),
        ({"provider": "nope", "secret": {"api_key": "x"}}, "provider"),
        ({"provider": "resend"}, "secret"),
    ],
)
async def test_bad_credential_is_rejected_and_nothing_stored(
    owner: Owner, pool: asyncpg.Pool, body: dict[str, object], field: str
) -> None:
    response = await owner.client.post("/api/credentials", json=body)
    assert response.status_code == 422
    assert response.json()["error"]["field"] == field
    assert await pool.fetchval("SELECT count(*) FROM credentials WHERE owner_id = $1::uuid", owner.id) == 0


async def test_other_owners_cannot_see_or_delete_a_credential(owner: Owner, other_owner: Owner) -> None:
    created = (await owner.client.post("/api/credentials", json=RESEND)).json()
    assert (await other_owner.client.get(f"/api/credentials/{created['id']}")).status_code == 404
    assert (await other_owner.client.delete(f"/api/credentials/{created['id']}")).status_code == 404
    assert (await other_owner.client.get("/api/credentials")).json()["items"] == []
    assert (await owner.client.get(f"/api/credentials/{created['id']}")).status_code == 200


async def test_delete_removes_an_api_key_credential(owner: Owner) -> None:
    created = (await owner.client.post("/api/credentials", json=RESEND)).json()
    assert (await owner.client.delete(f"/api/credentials/{created['id']}")).status_code == 204
    assert (await owner.client.get(f"/api/credentials/{created['id']}")).status_code == 404


async def test_a_ciphertext_moved_to_another_row_does_not_decrypt(
    owner: Owner, pool: asyncpg.Pool, keyring: Keyring
) -> None:
    a = (await owner.client.post("/api/credentials", json=RESEND)).json()
    b = (await owner.client.post("/api/credentials", json=RESEND | {"name": "other"})).json()
    await pool.execute(
        "UPDATE credentials SET secret = (SELECT secret FROM credentials WHERE id = $1::uuid) WHERE id = $2::uuid",
        a["id"],
        b["id"],
    )
    async with pool.acquire() as conn:
        with pytest.raises(DecryptionFailed):
            await store.load_secret(conn, keyring, UUID(owner.id), UUID(b["id"]))
    await pool.execute("DELETE FROM credentials WHERE id = $1::uuid", b["id"])


async def test_rotation_rewraps_every_secret_and_the_old_key_can_be_retired(owner: Owner, pool: asyncpg.Pool) -> None:
    created = (await owner.client.post("/api/credentials", json=RESEND)).json()
    await owner.client.post("/api/endpoints", json={"name": "in"})
    new_key = generate_key()
    rotated = Keyring([("rotated", new_key), ("test", MASTER_KEY)])
    async with pool.acquire() as conn:
        try:
            done = await keys.rotate(conn, rotated, batch_size=1)
            again = await keys.rotate(conn, rotated)
            status = await keys.key_status(conn)
            # With the old key gone from the keyring, every secret still decrypts.
            found = await store.load_secret(conn, Keyring([("rotated", new_key)]), UUID(owner.id), UUID(created["id"]))
        finally:
            # The rest of the suite runs with the original key: rotate back.
            await keys.rotate(conn, Keyring([("test", MASTER_KEY), ("rotated", new_key)]))
    assert done["credentials"] >= 1 and done["endpoint secrets"] >= 1
    assert sum(again.values()) == 0, "a second run finds nothing left to do"
    assert all(set(counts) <= {"rotated"} for counts in status.values())
    assert found is not None and found[1] == {"api_key": "re_live_SECRET_123"}


async def _novu_workflow(owner: Owner, credential_id: str) -> httpx.Response:
    endpoint = (await owner.client.post("/api/endpoints", json={"name": "in"})).json()
    return await owner.client.post(
        "/api/workflows",
        json={
            "name": "notify",
            "trigger": {"type": "webhook.received", "config": {"endpoint_id": endpoint["id"]}},
            "action": {
                "type": "novu.trigger",
                "config": {"workflow_id": "welcome", "to": "{{ trigger.body.user }}"},
                "credential_id": credential_id,
            },
        },
    )


async def test_a_workflow_may_use_its_owners_credential_for_the_right_provider(owner: Owner) -> None:
    novu = (await owner.client.post("/api/credentials", json={"provider": "novu", "secret": {"api_key": "k"}})).json()
    assert (await _novu_workflow(owner, novu["id"])).status_code == 201


async def test_a_workflow_cannot_use_another_owners_credential(owner: Owner, other_owner: Owner) -> None:
    theirs = (
        await other_owner.client.post("/api/credentials", json={"provider": "novu", "secret": {"api_key": "k"}})
    ).json()
    response = await _novu_workflow(owner, theirs["id"])
    assert response.status_code == 422
    assert response.json()["error"] == {
        "code": "invalid",
        "message": "no such credential",
        "field": "action.credential_id",
    }


async def test_a_workflow_cannot_use_a_credential_of_another_provider(owner: Owner) -> None:
    resend = (await owner.client.post("/api/credentials", json=RESEND)).json()
    response = await _novu_workflow(owner, resend["id"])
    assert response.status_code == 422
    assert "credential is for resend; this action needs novu" in response.json()["error"]["message"]
