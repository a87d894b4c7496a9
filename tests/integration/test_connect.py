"""OAuth2 connect links: consent, callback, reconnects, and every way a connection is refused."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qs, urlsplit
from uuid import UUID, uuid4

import asyncpg
import httpx
import pytest

from actions.errors import PermanentActionError
from oauth.crypto import Keyring
from oauth.google import google_from_settings
from oauth.vault import CredentialUnusable, Vault
from schemas.store import credentials as store
from tests.conftest import Owner
from tests.fake_google import FakeGoogle
from worker.automation.credentials import OwnerCredentials

GMAIL = "https://www.googleapis.com/auth/gmail.modify"


@pytest.fixture
async def browser() -> AsyncIterator[httpx.AsyncClient]:
    """A browser that keeps cookies and shows redirects instead of following them."""
    async with httpx.AsyncClient(follow_redirects=False, timeout=30) as client:
        yield client


async def new_link(owner: Owner, **extra: object) -> dict[str, str]:
    response = await owner.client.post("/api/connect-links", json={"provider": "google", "scopes": [GMAIL], **extra})
    assert response.status_code == 201, response.text
    link: dict[str, str] = response.json()
    return link


async def consent(browser: httpx.AsyncClient, url: str) -> httpx.Response:
    """Open the link, consent at (fake) Google, and land on the callback."""
    opened = await browser.get(url)
    assert opened.status_code == 302, opened.text
    at_google = await browser.get(opened.headers["location"])
    assert at_google.status_code == 302
    return await browser.get(at_google.headers["location"])


async def credentials_of(pool: asyncpg.Pool, owner: Owner) -> list[asyncpg.Record]:
    return await pool.fetch("SELECT * FROM credentials WHERE owner_id = $1::uuid", owner.id)


async def test_connect_link_connects_a_google_account(
    owner: Owner, browser: httpx.AsyncClient, fake_google_server: FakeGoogle
) -> None:
    link = await new_link(owner)
    done = await consent(browser, link["url"])
    assert done.status_code == 200 and "boss@example.com is connected" in done.text
    listed = (await owner.client.get("/api/credentials")).json()["items"]
    assert [(c["provider"], c["account_email"], c["status"]) for c in listed] == [
        ("google", "boss@example.com", "active")
    ]
    assert GMAIL in listed[0]["scopes"] and listed[0]["expires_at"]


async def test_tokens_are_stored_encrypted_and_never_shown(
    owner: Owner, pool: asyncpg.Pool, keyring: Keyring, browser: httpx.AsyncClient, fake_google_server: FakeGoogle
) -> None:
    await consent(browser, (await new_link(owner))["url"])
    row = (await credentials_of(pool, owner))[0]
    async with pool.acquire() as conn:
        found = await store.load_secret(conn, keyring, row["owner_id"], row["id"])
    assert found is not None
    tokens = found[1]
    assert tokens["access_token"].startswith("ya29.") and tokens["refresh_token"].startswith("1//")
    shown = (await owner.client.get(f"/api/credentials/{row['id']}")).text
    for token in tokens.values():
        assert token not in row["secret"] and token not in shown


async def test_callback_redirects_to_redirect_after(
    owner: Owner, browser: httpx.AsyncClient, fake_google_server: FakeGoogle
) -> None:
    link = await new_link(owner, redirect_after="https://app.example.com/connected?from=hookyard")
    done = await consent(browser, link["url"])
    assert done.status_code == 303
    target = urlsplit(done.headers["location"])
    assert (target.netloc, target.path) == ("app.example.com", "/connected")
    query = parse_qs(target.query)
    assert query["from"] == ["hookyard"] and query["status"] == ["connected"] and UUID(query["credential_id"][0])


async def test_reconnecting_updates_the_same_credential(
    owner: Owner, pool: asyncpg.Pool, keyring: Keyring, browser: httpx.AsyncClient, fake_google_server: FakeGoogle
) -> None:
    await consent(browser, (await new_link(owner))["url"])
    first = (await credentials_of(pool, owner))[0]
    fake_google_server.issue_refresh_token = False  # Google sends none on a repeat consent
    await consent(browser, (await new_link(owner))["url"])
    rows = await credentials_of(pool, owner)
    assert [r["id"] for r in rows] == [first["id"]]
    async with pool.acquire() as conn:
        before = store.unseal(keyring, first["owner_id"], first["id"], first["secret"])
        found = await store.load_secret(conn, keyring, first["owner_id"], first["id"])
    assert found is not None
    assert found[1]["refresh_token"] == before["refresh_token"], "the old refresh token is kept"
    assert found[1]["access_token"] != before["access_token"]


async def test_a_used_link_cannot_be_used_again(
    owner: Owner, pool: asyncpg.Pool, browser: httpx.AsyncClient, fake_google_server: FakeGoogle
) -> None:
    link = await new_link(owner)
    await consent(browser, link["url"])
    again = await browser.get(link["url"])
    assert again.status_code == 410 and "already used" in again.text
    assert len(await credentials_of(pool, owner)) == 1


async def test_an_expired_link_is_refused(
    owner: Owner, pool: asyncpg.Pool, browser: httpx.AsyncClient, fake_google_server: FakeGoogle
) -> None:
    link = await new_link(owner)
    await pool.execute(
        "UPDATE connect_links SET expires_at = now() - interval '1 second' WHERE id = $1::uuid", link["id"]
    )
    opened = await browser.get(link["url"])
    assert opened.status_code == 410 and "expired" in opened.text
    assert await credentials_of(pool, owner) == []


@pytest.mark.parametrize(
    "tamper",
    [
        lambda token: token[:-2] + ("AA" if not token.endswith("AA") else "BB"),  # signature
        lambda token: "00000000-0000-4000-8000-000000000000" + token[36:],  # another link id
        lambda token: token.split(".")[0],  # signature removed
    ],
)
async def test_a_tampered_link_is_refused(
    owner: Owner, pool: asyncpg.Pool, browser: httpx.AsyncClient, fake_google_server: FakeGoogle, tamper
) -> None:  # type: ignore[no-untyped-def]
    link = await new_link(owner)
    base, token = link["url"].rsplit("/", 1)
    opened = await browser.get(f"{base}/{tamper(token)}")
    assert opened.status_code == 400 and "not valid" in opened.text
    assert await credentials_of(pool, owner) == []


async def test_a_callback_cannot_be_replayed(
    owner: Owner, pool: asyncpg.Pool, browser: httpx.AsyncClient, fake_google_server: FakeGoogle
) -> None:
    link = await new_link(owner)
    opened = await browser.get(link["url"])
    callback = (await browser.get(opened.headers["location"])).headers["location"]
    assert (await browser.get(callback)).status_code == 200
    replayed = await browser.get(callback)
    assert replayed.status_code == 400 and "expired or was already completed" in replayed.text
    assert len(await credentials_of(pool, owner)) == 1


async def test_access_denied_stores_nothing(
    owner: Owner, pool: asyncpg.Pool, browser: httpx.AsyncClient, fake_google_server: FakeGoogle
) -> None:
    fake_google_server.deny = True
    done = await consent(browser, (await new_link(owner))["url"])
    assert done.status_code == 400 and "declined" in done.text
    assert await credentials_of(pool, owner) == []


async def test_a_pkce_verifier_mismatch_stores_nothing(
    owner: Owner, pool: asyncpg.Pool, browser: httpx.AsyncClient, fake_google_server: FakeGoogle
) -> None:
    opened = await browser.get((await new_link(owner))["url"])
    # An attacker's authorization request: same state, but a challenge of their own.
    forged = opened.headers["location"].replace("code_challenge=", "code_challenge=x")
    done = await browser.get((await browser.get(forged)).headers["location"])
    assert done.status_code == 400 and "invalid_grant" in done.text
    assert fake_google_server.token_errors == ["invalid_grant"]
    assert await credentials_of(pool, owner) == []


async def test_a_callback_in_another_browser_is_refused(
    owner: Owner, pool: asyncpg.Pool, browser: httpx.AsyncClient, fake_google_server: FakeGoogle
) -> None:
    opened = await browser.get((await new_link(owner))["url"])
    callback = (await browser.get(opened.headers["location"])).headers["location"]
    async with httpx.AsyncClient(timeout=30) as elsewhere:
        done = await elsewhere.get(callback)
    assert done.status_code == 400 and "browser that started it" in done.text
    assert await credentials_of(pool, owner) == []


async def test_connect_link_requests_are_validated(owner: Owner) -> None:
    bad = [
        {"provider": "resend"},
        {"provider": "google", "redirect_after": "http://evil.example.com/"},
        {"provider": "google", "scopes": ["has space"]},
    ]
    for body in bad:
        response = await owner.client.post("/api/connect-links", json=body)
        assert response.status_code == 422, body


async def connected(owner: Owner, pool: asyncpg.Pool, browser: httpx.AsyncClient) -> asyncpg.Record:
    await consent(browser, (await new_link(owner))["url"])
    return (await credentials_of(pool, owner))[0]


async def test_tokens_refresh_once_across_concurrent_users(
    owner: Owner,
    pool: asyncpg.Pool,
    keyring: Keyring,
    settings,
    browser: httpx.AsyncClient,
    fake_google_server: FakeGoogle,
) -> None:  # type: ignore[no-untyped-def]
    row = await connected(owner, pool, browser)
    await pool.execute("UPDATE credentials SET expires_at = now() + interval '10 seconds' WHERE id = $1", row["id"])
    async with httpx.AsyncClient() as http:
        vaults = [
            Vault(pool, keyring, http, google_from_settings(settings.for_google())) for _ in range(2)
        ]  # two workers
        import asyncio

        loaded = await asyncio.gather(*(v.load(row["owner_id"], row["id"], {"google"}) for v in vaults * 3))
    assert len(fake_google_server.refresh_calls) == 1
    assert len({c.secret["access_token"] for c in loaded}) == 1
    fresh = await pool.fetchval("SELECT expires_at FROM credentials WHERE id = $1", row["id"])
    assert fresh > datetime.now(UTC) + timedelta(minutes=30)


async def test_invalid_grant_needs_reconnect_and_pauses_gmail_triggers(
    owner: Owner,
    pool: asyncpg.Pool,
    keyring: Keyring,
    settings,
    browser: httpx.AsyncClient,
    fake_google_server: FakeGoogle,
) -> None:  # type: ignore[no-untyped-def]
    row = await connected(owner, pool, browser)
    async with pool.acquire() as conn:
        found = await store.load_secret(conn, keyring, row["owner_id"], row["id"])
    assert found is not None
    fake_google_server.dead_refresh_tokens.add(found[1]["refresh_token"])
    await pool.execute("UPDATE credentials SET expires_at = now() WHERE id = $1", row["id"])
    workflow_id = await pool.fetchval(
        "INSERT INTO workflows (owner_id, name, trigger_type, trigger_config, routing_key, action_type, "
        "action_config, retry_policy) VALUES ($1, 'mail', 'gmail.receive-email', $2, $3, 'http.request', '{}', '{}') "
        "RETURNING id",
        row["owner_id"],
        {"mailbox": str(row["id"]).upper()},  # the API accepts either case; the routing key is canonical
        str(row["id"]),
    )
    queued = await pool.fetchval(
        "INSERT INTO executions (owner_id, workflow_id, trigger_data) VALUES ($1, $2, '{}') RETURNING id",
        row["owner_id"],
        workflow_id,
    )
    async with httpx.AsyncClient() as http:
        source = OwnerCredentials(
            Vault(pool, keyring, http, google_from_settings(settings.for_google())), row["owner_id"]
        )
        with pytest.raises(PermanentActionError, match="needs to be reconnected"):
            await source.load(str(row["id"]), {"google"})
    shown = (await owner.client.get(f"/api/credentials/{row['id']}")).json()
    assert shown["status"] == "needs_reconnect" and "invalid_grant" in shown["status_reason"]
    assert await pool.fetchval("SELECT active FROM workflows WHERE id = $1", workflow_id) is False
    assert await pool.fetchval("SELECT status FROM executions WHERE id = $1", queued) == "cancelled"


async def test_a_credential_of_another_owner_cannot_be_loaded(
    owner: Owner, other_owner: Owner, pool: asyncpg.Pool, keyring: Keyring, settings, browser, fake_google_server
) -> None:  # type: ignore[no-untyped-def]
    row = await connected(owner, pool, browser)
    async with httpx.AsyncClient() as http:
        source = OwnerCredentials(Vault(pool, keyring, http), UUID(other_owner.id))
        with pytest.raises(PermanentActionError, match="not found"):
            await source.load(str(row["id"]), {"google"})


async def test_delete_revokes_at_google_then_deletes(
    owner: Owner, pool: asyncpg.Pool, keyring: Keyring, browser: httpx.AsyncClient, fake_google_server: FakeGoogle
) -> None:
    fake_google_server.email = f"only-{uuid4().hex}@example.com"  # no other owner has this account
    row = await connected(owner, pool, browser)
    refresh_token = store.unseal(keyring, row["owner_id"], row["id"], row["secret"])["refresh_token"]
    assert (await owner.client.delete(f"/api/credentials/{row['id']}")).status_code == 204
    assert fake_google_server.revoked == [refresh_token]
    assert (await owner.client.get(f"/api/credentials/{row['id']}")).status_code == 404


async def test_no_token_reaches_the_logs(
    owner: Owner,
    pool: asyncpg.Pool,
    keyring: Keyring,
    browser: httpx.AsyncClient,
    fake_google_server: FakeGoogle,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    row = await connected(owner, pool, browser)
    tokens = store.unseal(keyring, row["owner_id"], row["id"], row["secret"])
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert all(token not in logged for token in tokens.values())


def test_unusable_is_the_vault_error_for_a_wrong_provider() -> None:
    assert issubclass(CredentialUnusable, Exception)


async def test_a_malformed_redirect_after_is_422(owner: Owner) -> None:
    response = await owner.client.post(
        "/api/connect-links", json={"provider": "google", "redirect_after": "https://[oops/"}
    )
    assert response.status_code == 422 and response.json()["error"]["field"] == "redirect_after"


async def test_a_link_with_a_non_ascii_signature_is_refused(
    owner: Owner, browser: httpx.AsyncClient, fake_google_server: FakeGoogle
) -> None:
    base, token = (await new_link(owner))["url"].rsplit("/", 1)
    opened = await browser.get(f"{base}/{token.rsplit('.', 1)[0]}.%C3%A9")
    assert opened.status_code == 400 and "not valid" in opened.text


async def test_an_account_with_an_unverified_email_is_not_connected(
    owner: Owner, pool: asyncpg.Pool, browser: httpx.AsyncClient, fake_google_server: FakeGoogle
) -> None:
    fake_google_server.email_verified = False
    done = await consent(browser, (await new_link(owner))["url"])
    assert done.status_code == 400 and "which account" in done.text
    assert await credentials_of(pool, owner) == []


async def test_concurrent_first_connections_of_one_account_make_one_credential(
    owner: Owner, pool: asyncpg.Pool, keyring: Keyring
) -> None:
    async def connect_once(n: int) -> bool:
        async with pool.acquire() as conn:
            _, created = await store.upsert_oauth(
                conn, keyring, UUID(owner.id), "google", "race@example.com", ["email"], {"access_token": f"t{n}"}, None
            )
        return created

    import asyncio

    created = await asyncio.gather(*(connect_once(n) for n in range(4)))
    assert sorted(created) == [False, False, False, True]
    assert len(await credentials_of(pool, owner)) == 1


async def test_deleting_a_credential_keeps_a_grant_another_owner_still_uses(
    owner: Owner,
    other_owner: Owner,
    pool: asyncpg.Pool,
    browser: httpx.AsyncClient,
    fake_google_server: FakeGoogle,
) -> None:
    mine = await connected(owner, pool, browser)
    async with httpx.AsyncClient(follow_redirects=False, timeout=30) as their_browser:
        await consent(their_browser, (await new_link(other_owner))["url"])
    assert (await owner.client.delete(f"/api/credentials/{mine['id']}")).status_code == 204
    assert fake_google_server.revoked == [], "revoking would cut the other owner off too"
    assert len(await credentials_of(pool, other_owner)) == 1
