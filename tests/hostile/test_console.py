"""The console under hostile input: forged sessions, oversized forms, markup in bodies, revoked keys."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator

import httpx
import pytest

from tests.browser.support import csrf_of, signed_in
from tests.conftest import Owner
from tests.integration.api_support import create_endpoint, deliver

pytestmark = pytest.mark.integration


@pytest.fixture
async def console(base_url: str, owner: Owner) -> AsyncIterator[httpx.AsyncClient]:
    client = await signed_in(base_url, owner.key)
    yield client
    await client.aclose()


async def test_an_unknown_key_signs_nobody_in(base_url: str) -> None:
    async with httpx.AsyncClient(base_url=base_url) as client:
        token = csrf_of((await client.get("/console/sign-in")).text)
        answer = await client.post("/console/sign-in", data={"csrf_token": token, "api_key": "hy_" + "x" * 43})
        assert answer.status_code == 401
        assert "unknown or revoked" in answer.text
        assert "hookyard_console" not in answer.cookies


async def test_sign_in_without_the_pre_session_cookie_is_refused(base_url: str, owner: Owner) -> None:
    async with httpx.AsyncClient(base_url=base_url) as client:
        answer = await client.post("/console/sign-in", data={"csrf_token": "x", "api_key": owner.key})
    assert answer.status_code == 403
    assert "hookyard_console" not in answer.cookies


@pytest.mark.parametrize("cookie", ["", "x", "A" * 5000, "../../etc", "\u00e9t\u00e9"])
async def test_a_forged_session_cookie_leads_to_sign_in(base_url: str, cookie: str) -> None:
    async with httpx.AsyncClient(base_url=base_url) as client:
        answer = await client.get("/console/inbox", headers={"cookie": b"hookyard_console=" + cookie.encode()})
    assert answer.status_code == 303
    assert answer.headers["location"].endswith("/console/sign-in")


async def test_an_oversized_form_is_refused_before_it_is_read(console: httpx.AsyncClient) -> None:
    token = csrf_of((await console.get("/console/endpoints")).text)
    answer = await console.post("/console/endpoints", data={"csrf_token": token, "name": "x" * 300_000})
    assert answer.status_code == 413
    assert answer.headers["content-type"].startswith("text/html")


async def test_markup_in_a_webhook_body_is_shown_as_text(
    console: httpx.AsyncClient, owner: Owner, http: httpx.AsyncClient
) -> None:
    endpoint = await create_endpoint(owner)
    event_id = (await deliver(http, endpoint["id"], b"<script>alert(1)</script>\x00")).json()["event_id"]

    page = await console.get(f"/console/events/{event_id}")

    assert page.status_code == 200
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page.text
    assert "<script>alert" not in page.text


async def test_every_page_carries_a_strict_policy_and_no_inline_script(console: httpx.AsyncClient) -> None:
    for path in (
        "/console/inbox",
        "/console/workflows",
        "/console/workflows/new",
        "/console/executions",
        "/console/endpoints",
        "/console/credentials",
        "/console/nowhere",
    ):
        answer = await console.get(path)
        policy = answer.headers["content-security-policy"]
        assert "script-src 'self'" in policy and "unsafe-inline" not in policy, path
        assert answer.headers["x-frame-options"] == "DENY"
        assert re.search(r"<script(?![^>]*\bsrc=)", answer.text) is None, path
        assert re.search(r"\son[a-z]+=", answer.text) is None, path  # no inline event handlers


async def test_revoking_the_api_key_ends_its_console_sessions(base_url: str, owner: Owner) -> None:
    second = (await owner.client.post("/api/keys", json={"name": "console"})).json()
    client = await signed_in(base_url, second["key"])
    assert (await client.get("/console/inbox")).status_code == 200

    assert (await owner.client.delete(f"/api/keys/{second['id']}")).status_code == 204

    assert (await client.get("/console/inbox")).status_code == 303
    await client.aclose()


async def test_a_malformed_id_in_a_url_is_a_404_page(console: httpx.AsyncClient) -> None:
    for path in ("/console/events/not-a-uuid", "/console/workflows/%00", "/console/executions/1"):
        answer = await console.get(path)
        assert answer.status_code == 404, path
        assert "Not found" in answer.text
