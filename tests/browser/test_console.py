"""The owner console in a real browser: what an owner sees and does, end to end."""

from __future__ import annotations

import re
import uuid
from typing import Any
from uuid import UUID

import asyncpg
import httpx
import pytest

from oauth.crypto import Keyring
from schemas.store.credentials import mark_needs_reconnect, upsert_oauth
from tests.browser.conftest import screenshot, sign_in
from tests.conftest import Owner, Receiver
from tests.integration.api_support import create_endpoint, create_workflow, deliver, stored_event

pytestmark = pytest.mark.integration


async def test_signed_in_owner_sees_a_webhook_arrive_in_the_inbox_and_opens_it(
    page: Any, base_url: str, owner: Owner, http: httpx.AsyncClient
) -> None:
    endpoint = await create_endpoint(owner, name="shop")
    await sign_in(page, base_url, owner)
    rows = page.locator("#event-rows tr[data-id]")
    assert await rows.count() == 0

    response = await deliver(http, endpoint["id"], b'{"order": {"id": "A-1", "total": 250}}')
    event_id = response.json()["event_id"]

    row = page.locator(f'#event-rows tr[data-id="{event_id}"]')
    await row.wait_for()  # arrives without a reload
    await row.get_by_role("link").click()
    await page.wait_for_url(f"{base_url}/console/events/{event_id}")
    assert '"total": 250' in await page.locator("#body-pretty").inner_text()
    assert "verified (standard-webhooks" in await page.content()


@pytest.mark.usefixtures("pipeline")
async def test_owner_journey_endpoint_workflow_webhook_trace_execution_replay(
    page: Any, base_url: str, owner: Owner, http: httpx.AsyncClient, receiver: Receiver
) -> None:
    await sign_in(page, base_url, owner)

    # An endpoint: the secret is shown once, with a ready curl using `hookyard sign`.
    await page.get_by_role("link", name="Endpoints").click()
    assert "No endpoints yet" in await page.content()
    await page.get_by_label("Name").fill("shop")
    await page.get_by_role("button", name="Create endpoint").click()
    secret = (await page.locator("#endpoint-secret").inner_text()).strip()
    assert secret.startswith("whsec_")
    assert "hookyard sign --secret" in await page.locator("#endpoint-curl").inner_text()
    await screenshot(page, "endpoint-created")
    endpoint_id = re.search(r"/hooks/([0-9a-f-]{36})", await page.content()).group(1)  # type: ignore[union-attr]

    # A workflow from the generated form; the API's validation error is shown at the field.
    await page.get_by_role("link", name="Create a workflow for it").click()
    await page.get_by_label("Name", exact=True).fill("big orders")
    big = '{"path": "body.order.total", "op": "gt", "value": 100}'
    await page.locator("#f-trigger-webhook_received-filter").fill(big)
    await page.get_by_role("button", name="Create workflow").click()
    url_input = page.locator("#f-action-http_request-url")
    assert await url_input.get_attribute("aria-invalid") == "true"
    assert "action.config.url is required" in await page.locator("#err-f-action-http_request-url").inner_text()
    await screenshot(page, "workflow-form-error")
    target = f"/orders/{uuid.uuid4().hex}"
    await url_input.fill(receiver.url + target)
    await page.get_by_role("button", name="Create workflow").click()
    await page.get_by_text("Workflow created").wait_for()

    # A signed webhook arrives in the open inbox without a reload.
    await page.get_by_role("link", name="Inbox").click()
    body = b'{"order": {"id": "A-1", "total": 250}}'
    event_id = (await deliver(http, endpoint_id, body, secret=secret)).json()["event_id"]
    row = page.locator(f'#event-rows tr[data-id="{event_id}"]')
    await row.wait_for()
    await row.locator(".status-dispatched").wait_for()  # the row's status updates in place too
    await screenshot(page, "inbox")

    # The event says why the workflow fired and links to the execution.
    await row.get_by_role("link").click()
    trace = page.locator("table.trace")
    assert "big orders" in await trace.inner_text()
    assert "fired" in await trace.inner_text()
    await screenshot(page, "event")
    await trace.locator("a[href*='/executions/']").first.click()

    # The execution succeeds (the target got the request); replay queues a new one.
    await page.wait_for_url(re.compile(r"/console/executions/"))
    for _ in range(50):
        if "status-succeeded" in await page.locator("#execution-status").inner_html():
            break
        await page.wait_for_timeout(200)
        await page.reload()
    assert "status-succeeded" in await page.locator("#execution-status").inner_html()
    assert len(receiver.to(target)) == 1
    await screenshot(page, "execution")
    original = page.url
    await page.get_by_role("button", name="Replay").click()
    await page.get_by_text("Replay queued").wait_for()
    assert page.url != original

    # The workflows list shows the last run and the 24-hour success rate.
    await page.goto(f"{base_url}/console/workflows")
    assert "big orders" in await page.content()
    await screenshot(page, "workflows")


async def test_a_filter_change_is_dry_run_against_stored_events_before_it_is_saved(
    page: Any, base_url: str, owner: Owner, http: httpx.AsyncClient
) -> None:
    endpoint = (await create_endpoint(owner))["id"]
    big = {"path": "body.order.total", "op": "gt", "value": 100}
    workflow = await create_workflow(
        owner,
        endpoint,
        name="big orders",
        trigger={"type": "webhook.received", "config": {"endpoint_id": endpoint, "filter": big}},
    )
    await deliver(http, endpoint, b'{"order": {"id": "A-1", "total": 250}}')
    await sign_in(page, base_url, owner)

    await page.goto(f"{base_url}/console/workflows/{workflow['id']}/edit")
    await page.get_by_role("button", name="Dry run against stored events").click()
    panel = page.locator("#dry-run")
    assert "1 of 1 stored events would fire" in await panel.inner_text()
    assert "https://example.com/hook" in await panel.inner_text()  # the rendered request, not sent
    stricter = '{"path": "body.order.total", "op": "gt", "value": 1000}'
    await page.locator("#f-trigger-webhook_received-filter").fill(stricter)
    await page.get_by_role("button", name="Dry run against stored events").click()

    assert "0 of 1 stored events would fire" in await panel.inner_text()
    assert "1000" in await panel.locator("td.reason").inner_text()
    await screenshot(page, "dry-run")
    saved = (await owner.client.get(f"/api/workflows/{workflow['id']}")).json()
    assert saved["trigger"]["config"]["filter"] == big  # nothing was saved


async def test_sign_out_ends_the_session_on_the_server(page: Any, base_url: str, owner: Owner) -> None:
    await sign_in(page, base_url, owner)
    [cookie] = [c for c in await page.context.cookies() if c["name"] == "hookyard_console"]
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict" and cookie["expires"] > 0

    await page.get_by_role("button", name="Sign out").click()
    await page.wait_for_url(f"{base_url}/console/sign-in")

    await page.context.add_cookies([cookie])  # the old token, replayed
    await page.goto(f"{base_url}/console/inbox")
    assert page.url == f"{base_url}/console/sign-in"


async def test_another_owners_ids_in_urls_give_404_pages(
    page: Any, base_url: str, owner: Owner, other_owner: Owner, http: httpx.AsyncClient
) -> None:
    endpoint = (await create_endpoint(owner))["id"]
    workflow = (await create_workflow(owner, endpoint))["id"]
    event = await stored_event(http, endpoint)
    execution = (await owner.client.post(f"/api/workflows/{workflow}/run", json={})).json()["execution_id"]
    await sign_in(page, base_url, other_owner)

    for path in (
        f"/events/{event}",
        f"/workflows/{workflow}",
        f"/workflows/{workflow}/edit",
        f"/executions/{execution}",
        f"/executions?workflow={workflow}",
    ):
        response = await page.goto(f"{base_url}/console{path}")
        assert response.status == 404, path
        assert await page.get_by_role("heading", name="Not found").is_visible()
    response = await page.request.post(f"{base_url}/console/workflows/{workflow}/deactivate", form={"csrf_token": "x"})
    assert response.status == 403  # refused before anything is looked up


async def test_posts_without_the_csrf_token_are_refused_and_change_nothing(
    page: Any, base_url: str, owner: Owner
) -> None:
    endpoint = (await create_endpoint(owner))["id"]
    workflow = (await create_workflow(owner, endpoint))["id"]
    await sign_in(page, base_url, owner)
    url = f"{base_url}/console/workflows/{workflow}/deactivate"

    without = await page.request.post(url, form={})
    wrong = await page.request.post(url, form={"csrf_token": "0" * 64})
    token = await page.locator("input[name=csrf_token]").first.input_value()
    foreign = await page.request.post(url, form={"csrf_token": token}, headers={"origin": "https://evil.example"})

    assert (without.status, wrong.status, foreign.status) == (403, 403, 403)
    assert (await owner.client.get(f"/api/workflows/{workflow}")).json()["active"] is True
    assert (await page.request.post(url, form={"csrf_token": token})).ok
    assert (await owner.client.get(f"/api/workflows/{workflow}")).json()["active"] is False


async def test_a_credential_needing_reconnection_stands_out_with_a_one_click_new_link(
    page: Any, base_url: str, owner: Owner, pool: asyncpg.Pool, keyring: Keyring
) -> None:
    async with pool.acquire() as conn:
        row, _ = await upsert_oauth(
            conn, keyring, UUID(owner.id), "google", "ada@example.com", ["openid", "email"], {"access_token": "t"}, None
        )
        await mark_needs_reconnect(conn, UUID(owner.id), row.id, "invalid_grant: token revoked")
    await sign_in(page, base_url, owner)

    await page.get_by_role("link", name="Credentials").click()
    flagged = page.locator(f'tr.highlight[data-id="{row.id}"]')
    assert "needs_reconnect" in await flagged.inner_text()
    await flagged.get_by_role("button", name="New connect link").click()

    link = (await page.locator("#connect-link").inner_text()).strip()
    assert link.startswith(f"{base_url}/oauth/connect/")
    assert "for ada@example.com" in await page.content()
    await page.set_viewport_size({"width": 390, "height": 844})  # a phone
    await screenshot(page, "credentials-phone")
