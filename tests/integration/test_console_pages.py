"""Console pages over plain HTTP: filters, lists, toggles, run now, rotate and delete."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator

import asyncpg
import httpx
import pytest

from tests.browser.support import csrf_of, signed_in
from tests.conftest import Owner
from tests.integration.api_support import create_endpoint, create_workflow, deliver, queued_execution, stored_event

pytestmark = pytest.mark.integration


@pytest.fixture
async def console(base_url: str, owner: Owner) -> AsyncIterator[httpx.AsyncClient]:
    client = await signed_in(base_url, owner.key)
    yield client
    await client.aclose()


async def post(console: httpx.AsyncClient, path: str, page: str, **data: str) -> httpx.Response:
    """Submit a form the way the page at `page` would (with its CSRF token)."""
    token = csrf_of((await console.get(page)).text)
    return await console.post(path, data={"csrf_token": token, **data})


async def test_the_inbox_filters_by_source_and_status(
    console: httpx.AsyncClient, owner: Owner, http: httpx.AsyncClient
) -> None:
    shop = (await create_endpoint(owner, name="shop"))["id"]
    crm = (await create_endpoint(owner, name="crm"))["id"]
    from_shop = await stored_event(http, shop, b'{"a": 1}')
    from_crm = await stored_event(http, crm, b'{"b": 2}')

    by_source = (await console.get("/console/inbox/rows", params={"source": shop})).text
    received = (await console.get("/console/inbox", params={"status": "received"})).text
    rejected = (await console.get("/console/inbox", params={"status": "rejected"})).text

    assert from_shop in by_source and from_crm not in by_source
    assert from_shop in received and from_crm in received
    assert from_shop not in rejected and "No events match" in rejected


async def test_a_new_owner_is_told_what_to_do_first(console: httpx.AsyncClient) -> None:
    assert "No endpoints yet" in (await console.get("/console/inbox")).text
    assert "First <a" in (await console.get("/console/workflows")).text
    assert "No endpoints yet" in (await console.get("/console/endpoints")).text
    assert "No credentials yet" in (await console.get("/console/credentials")).text


async def test_deactivate_activate_and_delete_a_workflow(console: httpx.AsyncClient, owner: Owner) -> None:
    workflow = (await create_workflow(owner, (await create_endpoint(owner))["id"]))["id"]
    page = f"/console/workflows/{workflow}"

    assert (await post(console, f"{page}/deactivate", page)).status_code == 303
    assert (await owner.client.get(f"/api/workflows/{workflow}")).json()["active"] is False
    assert (await post(console, f"{page}/activate", page)).status_code == 303
    assert (await owner.client.get(f"/api/workflows/{workflow}")).json()["active"] is True
    assert (await post(console, f"{page}/delete", page)).headers["location"].endswith("/console/workflows")
    assert (await owner.client.get(f"/api/workflows/{workflow}")).status_code == 404


async def test_run_now_queues_an_execution_with_the_given_trigger_data(
    console: httpx.AsyncClient, owner: Owner
) -> None:
    workflow = (await create_workflow(owner, (await create_endpoint(owner))["id"]))["id"]
    page = f"/console/workflows/{workflow}"

    answer = await post(console, f"{page}/run", page, trigger_data='{"order": {"id": "T-1"}}')
    not_an_object = await post(console, f"{page}/run", page, trigger_data="[1]")

    execution = answer.headers["location"].rsplit("/", 1)[1]
    shown = (await console.get(f"/console/executions/{execution}")).text
    assert "&#34;id&#34;: &#34;T-1&#34;" in shown and "manual run" in shown
    assert not_an_object.status_code == 422 and "JSON object" in not_an_object.text


async def test_executions_are_listed_across_workflows_and_per_workflow(
    console: httpx.AsyncClient, owner: Owner, http: httpx.AsyncClient, pool: asyncpg.Pool
) -> None:
    endpoint = (await create_endpoint(owner))["id"]
    first = (await create_workflow(owner, endpoint, name="first"))["id"]
    second = (await create_workflow(owner, endpoint, name="second"))["id"]
    event = await stored_event(http, endpoint)
    one = await queued_execution(pool, owner, first, event)
    two = await queued_execution(pool, owner, second, event)

    everything = (await console.get("/console/executions")).text
    of_first = (await console.get("/console/executions", params={"workflow": first})).text
    queued = (await console.get("/console/executions", params={"status": "succeeded"})).text

    assert one in everything and two in everything
    assert one in of_first and two not in of_first
    assert one not in queued


async def test_a_queued_execution_can_be_cancelled(
    console: httpx.AsyncClient, owner: Owner, http: httpx.AsyncClient, pool: asyncpg.Pool
) -> None:
    endpoint = (await create_endpoint(owner))["id"]
    workflow = (await create_workflow(owner, endpoint))["id"]
    execution = await queued_execution(pool, owner, workflow, await stored_event(http, endpoint))
    page = f"/console/executions/{execution}"

    answer = await post(console, f"{page}/cancel", page)

    assert answer.status_code == 303
    assert (await owner.client.get(f"/api/executions/{execution}")).json()["status"] == "cancelled"
    assert "Cancel</button>" not in (await console.get(page)).text


async def test_rotating_an_endpoint_shows_the_new_secret_once_and_both_verify(
    console: httpx.AsyncClient, owner: Owner, http: httpx.AsyncClient
) -> None:
    endpoint = await create_endpoint(owner)

    answer = await post(console, f"/console/endpoints/{endpoint['id']}/rotate", "/console/endpoints")

    secret = re.search(r'id="endpoint-secret"[^>]*>(whsec_[^<]+)<', answer.text).group(1)  # type: ignore[union-attr]
    assert "keeps working until" in answer.text
    assert (await deliver(http, endpoint["id"], b"{}", secret=secret)).status_code == 202
    assert (await deliver(http, endpoint["id"], b'{"old": 1}')).status_code == 202
    assert secret not in (await console.get("/console/endpoints")).text


async def test_an_invalid_endpoint_name_is_explained_and_nothing_is_created(
    console: httpx.AsyncClient, owner: Owner
) -> None:
    answer = await post(console, "/console/endpoints", "/console/endpoints", name="x" * 300)

    assert answer.status_code == 422
    assert "name must be at most 200 characters long" in answer.text
    assert (await owner.client.get("/api/endpoints")).json()["items"] == []


async def test_deleting_an_endpoint_refuses_its_deliveries(
    console: httpx.AsyncClient, owner: Owner, http: httpx.AsyncClient
) -> None:
    endpoint = await create_endpoint(owner)

    answer = await post(console, f"/console/endpoints/{endpoint['id']}/delete", "/console/endpoints")

    assert answer.status_code == 303
    assert (await deliver(http, endpoint["id"], b"{}")).status_code == 404


async def test_the_workflows_list_shows_the_last_run_and_the_success_rate(
    console: httpx.AsyncClient, owner: Owner, http: httpx.AsyncClient, pool: asyncpg.Pool
) -> None:
    endpoint = (await create_endpoint(owner))["id"]
    workflow = (await create_workflow(owner, endpoint, name="rated"))["id"]
    ids = [await queued_execution(pool, owner, workflow, await stored_event(http, endpoint)) for _ in range(4)]
    async with pool.acquire() as conn:
        await conn.execute(
            "UPDATE executions SET status = CASE WHEN id = $1 THEN 'failed' ELSE 'succeeded' END, "
            "finished_at = now() WHERE id = ANY($2::uuid[])",
            ids[0],
            ids,
        )

    listing = (await console.get("/console/workflows")).text

    assert "rated" in listing
    assert "75 %" in listing and "of 4" in listing
