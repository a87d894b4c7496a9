"""`/api/keys` and `hookyard owners keys`: list, create (shown once, hashed at rest) and revoke."""

from __future__ import annotations

import asyncio
import hashlib
import uuid

import asyncpg
import httpx
import pytest

from hookyard.cli import main
from tests.conftest import Owner, Stack

pytestmark = pytest.mark.integration


def _client(owner: Owner, key: str) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=owner.client.base_url, headers={"authorization": f"Bearer {key}"}, timeout=30)


async def _create(owner: Owner, name: str = "ci") -> dict[str, str]:
    response = await owner.client.post("/api/keys", json={"name": name})
    assert response.status_code == 201, response.text
    created: dict[str, str] = response.json()
    return created


async def _current_key_id(owner: Owner) -> str:
    items = (await owner.client.get("/api/keys")).json()["items"]
    (only,) = [item for item in items if owner.key.startswith(item["prefix"])]
    key_id: str = only["id"]
    return key_id


async def test_a_created_key_is_shown_once_and_authenticates(owner: Owner) -> None:
    created = await _create(owner, "deploy")

    async with _client(owner, created["key"]) as client:
        response = await client.get("/api/endpoints")
    listed = (await owner.client.get("/api/keys")).json()["items"]

    assert response.status_code == 200
    assert created["key"].startswith(created["prefix"])
    assert created["name"] == "deploy"
    assert [item["name"] for item in listed] == ["deploy", "default"]
    assert all("key" not in item for item in listed)


async def test_keys_are_stored_only_as_hashes(owner: Owner, pool: asyncpg.Pool) -> None:
    created = await _create(owner)

    async with pool.acquire() as conn:
        row = await conn.fetchrow("SELECT * FROM api_keys WHERE id = $1", uuid.UUID(created["id"]))

    assert row is not None
    assert bytes(row["key_hash"]) == hashlib.sha256(created["key"].encode()).digest()
    assert created["key"] not in {str(value) for value in dict(row).values()}


async def test_a_revoked_key_no_longer_authenticates(owner: Owner) -> None:
    created = await _create(owner)

    revoked = await owner.client.delete(f"/api/keys/{created['id']}")
    async with _client(owner, created["key"]) as client:
        response = await client.get("/api/endpoints")

    assert revoked.status_code == 204
    assert response.status_code == 401
    listed = {item["id"]: item for item in (await owner.client.get("/api/keys")).json()["items"]}
    assert listed[created["id"]]["revoked_at"] is not None


async def test_the_only_active_key_cannot_revoke_itself(owner: Owner) -> None:
    response = await owner.client.delete(f"/api/keys/{await _current_key_id(owner)}")

    assert response.status_code == 409
    assert response.json()["error"]["code"] == "last_active_key"
    assert "create another key" in response.json()["error"]["message"]
    assert (await owner.client.get("/api/keys")).status_code == 200


async def test_the_key_in_use_can_be_revoked_once_another_is_active(owner: Owner) -> None:
    replacement = await _create(owner, "replacement")

    response = await owner.client.delete(f"/api/keys/{await _current_key_id(owner)}")

    assert response.status_code == 204
    assert (await owner.client.get("/api/keys")).status_code == 401
    async with _client(owner, replacement["key"]) as client:
        assert (await client.get("/api/keys")).status_code == 200


async def test_another_owners_key_is_not_found(owner: Owner, other_owner: Owner) -> None:
    theirs = await _current_key_id(other_owner)

    response = await owner.client.delete(f"/api/keys/{theirs}")

    assert response.status_code == 404
    assert (await other_owner.client.get("/api/keys")).status_code == 200
    assert all(item["id"] != theirs for item in (await owner.client.get("/api/keys")).json()["items"])


async def test_keys_are_listed_a_page_at_a_time(owner: Owner) -> None:
    for n in range(3):
        await _create(owner, f"k{n}")

    first = (await owner.client.get("/api/keys", params={"limit": 2})).json()
    second = (await owner.client.get("/api/keys", params={"limit": 2, "cursor": first["next_cursor"]})).json()

    assert [item["name"] for item in first["items"]] == ["k2", "k1"]
    assert [item["name"] for item in second["items"]] == ["k0", "default"]
    assert second["next_cursor"] is None


async def test_a_key_name_outside_the_schema_is_422_naming_it(owner: Owner) -> None:
    response = await owner.client.post("/api/keys", json={"name": ""})

    assert response.status_code == 422
    assert response.json()["error"]["field"] == "name"


async def _cli(monkeypatch: pytest.MonkeyPatch, stack: Stack, *argv: str) -> int:
    monkeypatch.setenv("DATABASE_URL", stack.database_url)
    return await asyncio.to_thread(main, ["owners", "keys", *argv])


async def test_cli_creates_lists_and_revokes_keys(
    owner: Owner, stack: Stack, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    assert await _cli(monkeypatch, stack, "create", owner.id, "--name", "laptop") == 0
    created = capsys.readouterr().out
    key = created.split("API key: ")[1].split()[0]
    key_id = created.split("id:")[1].split()[0]
    async with _client(owner, key) as client:
        assert (await client.get("/api/keys")).status_code == 200

    assert await _cli(monkeypatch, stack, "list", owner.id) == 0
    listed = capsys.readouterr().out
    assert await _cli(monkeypatch, stack, "revoke", owner.id, key_id) == 0
    revoked = capsys.readouterr().out

    assert "shown once" in created
    assert key_id in listed and "'laptop'" in listed and key not in listed
    assert f"key {key_id} revoked" in revoked
    async with _client(owner, key) as client:
        assert (await client.get("/api/keys")).status_code == 401


async def test_cli_names_an_unknown_owner(stack: Stack, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(SystemExit, match="no owner with id or name 'nobody-here'"):
        await _cli(monkeypatch, stack, "list", "nobody-here")
