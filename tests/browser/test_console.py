"""The owner console in a real browser: what an owner sees and does, end to end."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.browser.conftest import screenshot, sign_in
from tests.conftest import Owner
from tests.integration.api_support import create_endpoint, deliver

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
    await screenshot(page, "inbox")
    await row.get_by_role("link").click()
    await page.wait_for_url(f"{base_url}/console/events/{event_id}")
    assert '"total": 250' in await page.locator("#body-pretty").inner_text()
    assert "verified (standard-webhooks" in await page.content()
