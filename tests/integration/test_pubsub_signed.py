"""The OIDC-verified push path end to end against a local signer: its keys are served from a
local certs URL (`HOOKYARD_GOOGLE_CERTS_URL`, a setting for testing), the push comes in the
envelope the Pub/Sub emulator sends, and nothing in hookyard is stubbed."""

from __future__ import annotations

from collections.abc import AsyncIterator

import asyncpg
import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from hookyard import services
from oauth.crypto import Keyring
from schemas.store.owners import create_owner
from tests.conftest import Stack, make_settings, serve
from tests.gmail_support import connect_google, push_body, unique_email
from tests.google_oidc import AUDIENCE, PUSH_ACCOUNT, GoogleSigner

pytestmark = pytest.mark.integration

SIGNER = GoogleSigner("local-key")
OTHER = GoogleSigner("local-key")  # same key id, different key: a forged token
PATH = "/ingest/pubsub/gmail"


@pytest.fixture(scope="module")
async def app_url(stack: Stack, keyring: Keyring) -> AsyncIterator[str]:
    from ingest.app import create_app

    fetched: list[str] = []

    async def certs(request: Request) -> JSONResponse:
        fetched.append(request.url.path)
        return JSONResponse(SIGNER.jwks(), headers={"cache-control": "max-age=600"})

    keys = Starlette(routes=[Route("/oauth2/v3/certs", certs)])
    async with serve(keys, services.free_port(), lifespan="off") as keys_url:  # type: ignore[arg-type]
        settings = make_settings(
            stack,
            pubsub_audience=AUDIENCE,
            pubsub_service_account=PUSH_ACCOUNT,
            pubsub_verify=True,
            google_certs_url=f"{keys_url}/oauth2/v3/certs",
        )
        async with serve(create_app(settings, keyring), settings.port) as url:
            yield url
    assert fetched, "the verifier never asked the configured certs URL"


async def test_a_push_signed_by_a_local_key_served_from_the_certs_url_is_verified_and_stored(
    app_url: str, pool: asyncpg.Pool, keyring: Keyring
) -> None:
    async with pool.acquire() as conn:
        owner_id, _ = await create_owner(conn, "signed-push")
    email = unique_email()
    credential = await connect_google(pool, keyring, owner_id, email, "tok-signed")
    body = push_body(email, 5150, "m-signed", snake_case=True)  # the emulator's spelling
    async with httpx.AsyncClient(base_url=app_url) as http:
        forged = await http.post(PATH, json=body, headers={"authorization": OTHER.header()})
        accepted = await http.post(PATH, json=body, headers={"authorization": SIGNER.header()})
    assert forged.status_code == 401, forged.text
    assert accepted.status_code == 204, accepted.text
    event = await pool.fetchrow(
        "SELECT dedup_key, verification FROM events WHERE source_type = 'gmail.push' AND source_id = $1", credential
    )
    assert event["dedup_key"] == "m-signed" and event["verification"]["verified"] is True
