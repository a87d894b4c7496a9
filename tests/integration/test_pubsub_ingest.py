"""`POST /ingest/pubsub/gmail`: only Google-signed pushes from our service account are stored,
once per watched mailbox, and every answer is one Pub/Sub understands (ack, or retry later).

Google's signing keys are served by respx; requests to the local app pass through.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
import respx

from hookyard import services
from ingest.oidc import GOOGLE_CERTS_URL
from oauth.crypto import Keyring
from schemas import db
from schemas.migrate import migrate
from schemas.store.owners import create_owner
from settings import Settings
from tests.conftest import Stack, make_settings, serve
from tests.gmail_support import connect_google, push_body, unique_email
from tests.google_oidc import AUDIENCE, PUSH_ACCOUNT, GoogleSigner

pytestmark = pytest.mark.integration

SIGNER = GoogleSigner("push-key")
STRANGER = GoogleSigner("push-key")
PATH = "/ingest/pubsub/gmail"


@pytest.fixture(scope="module")
def push_settings(stack: Stack) -> Settings:
    return make_settings(stack, pubsub_audience=AUDIENCE, pubsub_service_account=PUSH_ACCOUNT)


@pytest.fixture(scope="module")
async def google_keys() -> AsyncIterator[respx.Route]:
    with respx.mock(assert_all_called=False) as mock:
        mock.route(host="127.0.0.1").pass_through()
        route = mock.get(GOOGLE_CERTS_URL).respond(200, json=SIGNER.jwks(), headers={"cache-control": "max-age=600"})
        yield route


@pytest.fixture(scope="module")
async def app_url(push_settings: Settings, keyring: Keyring, google_keys: respx.Route) -> AsyncIterator[str]:
    from ingest.app import create_app

    async with serve(create_app(push_settings, keyring), push_settings.port) as url:
        yield url


@pytest.fixture
async def push(app_url: str) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=app_url, timeout=30) as client:
        yield client


async def new_owner_id(pool: asyncpg.Pool) -> str:
    async with pool.acquire() as conn:
        owner_id, _ = await create_owner(conn, "gmail-user")
    return str(owner_id)


async def stored(pool: asyncpg.Pool, credential_id: str) -> list[asyncpg.Record]:
    async with pool.acquire() as conn:
        return await conn.fetch(
            "SELECT owner_id, source_type, source_id, dedup_key, body, verification, duplicate_count FROM events "
            "WHERE source_type = 'gmail.push' AND source_id = $1 ORDER BY seq",
            credential_id,
        )


def bearer(**claims: Any) -> dict[str, str]:
    return {"authorization": SIGNER.header(**claims)}


async def test_a_signed_push_for_a_watched_mailbox_is_stored_once_and_acknowledged(push, pool, keyring) -> None:
    owner = await new_owner_id(pool)
    email = unique_email()
    credential = await connect_google(pool, keyring, owner, email, "tok-1")
    response = await push.post(PATH, json=push_body(email, 4242, "m-1"), headers=bearer())
    assert response.status_code == 204
    [event] = await stored(pool, credential)
    assert str(event["owner_id"]) == owner
    assert event["dedup_key"] == "m-1"
    assert event["body"] == b'{"emailAddress":"' + email.encode() + b'","historyId":4242}'
    assert event["verification"]["verified"] is True
    assert event["verification"]["message_id"] == "m-1"


async def test_the_snake_case_spelling_and_base64url_data_are_accepted(push, pool, keyring) -> None:
    email = unique_email()
    credential = await connect_google(pool, keyring, await new_owner_id(pool), email, "tok-2")
    body = push_body(email, 77, "m-snake", snake_case=True, urlsafe=True)
    assert (await push.post(PATH, json=body, headers=bearer())).status_code == 204
    [event] = await stored(pool, credential)
    assert event["dedup_key"] == "m-snake"
    assert event["verification"]["publish_time"] == "2026-11-23T10:00:00.123Z"


async def test_a_redelivered_push_is_counted_not_stored_again(push, pool, keyring) -> None:
    email = unique_email()
    credential = await connect_google(pool, keyring, await new_owner_id(pool), email, "tok-3")
    for _ in range(3):
        assert (await push.post(PATH, json=push_body(email, 9, "m-again"), headers=bearer())).status_code == 204
    [event] = await stored(pool, credential)
    assert event["duplicate_count"] == 2


async def test_one_event_per_owner_when_two_owners_connected_the_same_address(push, pool, keyring) -> None:
    email = unique_email("shared")
    first = await connect_google(pool, keyring, await new_owner_id(pool), email, "tok-a")
    second = await connect_google(pool, keyring, await new_owner_id(pool), email.upper(), "tok-b")
    assert (await push.post(PATH, json=push_body(email, 5, "m-shared"), headers=bearer())).status_code == 204
    assert len(await stored(pool, first)) == 1
    assert len(await stored(pool, second)) == 1


async def test_a_push_for_an_unwatched_mailbox_is_acknowledged_and_dropped(push, pool, keyring) -> None:
    email = unique_email("nobody")
    credential = await connect_google(pool, keyring, await new_owner_id(pool), email, "tok-4", mailbox=False)
    assert (await push.post(PATH, json=push_body(email, 5), headers=bearer())).status_code == 204
    assert await stored(pool, credential) == []


REJECTIONS = {
    "missing header": lambda: {},
    "wrong audience": lambda: bearer(aud="https://elsewhere.example/push"),
    "wrong email": lambda: bearer(email="attacker@evil.iam.gserviceaccount.com"),
    "email not verified": lambda: bearer(email_verified=False),
    "expired": lambda: bearer(now=1_600_000_000),
    "bad signature": lambda: {"authorization": STRANGER.header()},
    "unknown key id": lambda: {"authorization": SIGNER.header(kid="retired-key")},
    "malformed": lambda: {"authorization": "Bearer not-a-jwt"},
}


@pytest.mark.parametrize("reason", sorted(REJECTIONS))
async def test_a_push_without_an_acceptable_token_is_refused_and_nothing_is_stored(
    push, pool, keyring, reason: str
) -> None:
    email = unique_email("refused")
    credential = await connect_google(pool, keyring, await new_owner_id(pool), email, "tok-r")
    response = await push.post(PATH, json=push_body(email, 10), headers=REJECTIONS[reason]())
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "oidc_" + reason.replace(" ", "_")
    assert await stored(pool, credential) == []


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        (b"not json", "not JSON"),
        (b'{"subscription": "s"}', "no 'message'"),
        (b'{"message": {"data": "e30="}}', "messageId"),
        (b'{"message": {"messageId": "1", "data": "%%%"}}', "base64"),
        (b'{"message": {"messageId": "1", "data": "e30="}}', "emailAddress"),
        (b'{"message": {"messageId": "1", "data": "eyJlbWFpbEFkZHJlc3MiOiAiYUBiLmMifQ=="}}', "historyId"),
        (b'{"message": {"messageId": "1\\u0000", "data": "e30="}}', "messageId is not a valid"),
        (b'{"message": {"messageId": "1", "data": "e30="}, "subscription": "' + b"s" * 600 + b'"}', "subscription"),
    ],
)
async def test_a_body_that_is_not_a_gmail_push_gets_400_naming_the_problem(push, body: bytes, problem: str) -> None:
    response = await push.post(PATH, content=body, headers=bearer() | {"content-type": "application/json"})
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "bad_push"
    assert problem in response.json()["error"]["message"]


async def test_with_verification_off_pushes_are_taken_without_a_token(stack, pool, keyring) -> None:
    from ingest.app import create_app

    settings = make_settings(stack, pubsub_verify=False)
    email = unique_email("emulator")
    credential = await connect_google(pool, keyring, await new_owner_id(pool), email, "tok-e")
    async with serve(create_app(settings, keyring), settings.port) as url, httpx.AsyncClient(base_url=url) as http:
        assert (await http.post(PATH, json=push_body(email, 3, "m-emu"))).status_code == 204
    [event] = await stored(pool, credential)
    assert event["verification"] == {
        "verified": False,
        "scheme": "none",
        "message_id": "m-emu",
        "publish_time": "2026-11-23T10:00:00.123Z",
        "subscription": "projects/test/subscriptions/gmail-push",
    }


async def test_storage_down_answers_503_so_pubsub_redelivers(stack, keyring, google_keys, tmp_path: Path) -> None:
    from ingest.app import create_app

    pg, url = services.start_postgres(tmp_path, services.free_port(), durable=False)
    try:
        await migrate(url)
        settings = make_settings(stack, database_url=url, pubsub_audience=AUDIENCE, pubsub_service_account=PUSH_ACCOUNT)
        pool = await db.create_pool(url, min_size=1, max_size=2)
        email = unique_email("outage")
        await connect_google(pool, keyring, await new_owner_id(pool), email, "tok-o")
        await pool.close()
        async with (
            serve(create_app(settings, keyring), settings.port) as base,
            httpx.AsyncClient(base_url=base) as http,
        ):
            assert (await http.post(PATH, json=push_body(email, 1), headers=bearer())).status_code == 204
            pg.stop()
            response = await http.post(PATH, json=push_body(email, 2), headers=bearer())
        assert response.status_code == 503
    finally:
        pg.stop()
