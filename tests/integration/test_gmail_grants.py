"""A broken Google grant on the real stack (PostgreSQL, Temporal, dispatcher, worker), with
stand-ins that behave as Google does when an account holder removes access: the old access
token answers 401, the refresh token `invalid_grant`.

A dead grant is noticed at its first use, marks the credential `needs_reconnect` with a
reason, pauses the triggers reading that mailbox (hookyard's own pause, not the owner's
`active`), and a reconnect through a new connect link resumes exactly what was paused.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any
from uuid import UUID

import asyncpg
import httpx
import orjson
import pytest
from temporalio.client import Client, WorkflowExecutionStatus

from hookyard import services
from oauth.crypto import Keyring
from oauth.google import google_from_settings
from oauth.vault import CredentialUnusable, Loaded, TokenRejected, Vault
from schemas import db
from schemas.store.gmail import mailbox_health
from schemas.store.owners import create_owner
from settings import Settings
from tests.conftest import Owner, Receiver, Stack, make_settings, new_owner, serve, wait_for
from tests.fake_gmail import FakeGmail, FakeMailbox
from tests.fake_google import FakeGoogle
from tests.gmail_support import connect_google, gmail_events, mailbox_row, push_body, unique_email
from tests.integration.api_support import create_endpoint
from worker.gmail.contract import mailbox_workflow_id

pytestmark = pytest.mark.integration

TOPIC = "projects/hookyard-test/topics/gmail"
PUSH = "/ingest/pubsub/gmail"
GMAIL = "https://www.googleapis.com/auth/gmail.modify"


@dataclass
class Env:
    settings: Settings
    url: str
    gmail: FakeGmail
    temporal: Client


@pytest.fixture(scope="module")
async def env(stack: Stack, keyring: Keyring) -> AsyncIterator[Env]:
    from ingest.app import create_app
    from worker.dispatch.dispatcher import Dispatcher
    from worker.main import run_worker

    gmail = FakeGmail()
    async with serve(gmail.app, services.free_port(), lifespan="off") as gmail_url:  # type: ignore[arg-type]
        gmail.url = gmail_url
        settings = make_settings(
            stack,
            gmail_api_base=gmail_url,
            gmail_topic=TOPIC,
            pubsub_verify=False,
            task_queue=f"grants-{uuid.uuid4().hex[:8]}",
            gmail_sweep_interval_s=3600.0,
            gmail_watch_renew_s=3600.0,
        )
        stop = asyncio.Event()
        dpool = await db.create_pool(settings.database_url, min_size=1, max_size=4)
        async with serve(create_app(settings, keyring), settings.port) as url:
            tasks = [
                asyncio.create_task(Dispatcher(dpool, settings).run(stop)),
                asyncio.create_task(run_worker(settings, keyring, stop)),
            ]
            temporal = await Client.connect(settings.temporal_address)
            yield Env(settings, url, gmail, temporal)
            stop.set()
            await asyncio.gather(*tasks, return_exceptions=True)
        await dpool.close()


@dataclass
class Account:
    owner: Owner
    email: str
    credential_id: str
    box: FakeMailbox


async def connect(env: Env, google: FakeGoogle, owner: Owner, email: str) -> str:
    """Connect (or reconnect) `email` through a connect link and a consent at the stand-in Google."""
    google.email = email
    response = await owner.client.post("/api/connect-links", json={"provider": "google", "scopes": [GMAIL]})
    assert response.status_code == 201, response.text
    async with httpx.AsyncClient(follow_redirects=False, timeout=30) as browser:
        opened = await browser.get(response.json()["url"])
        at_google = await browser.get(opened.headers["location"])
        done = await browser.get(at_google.headers["location"])
    assert done.status_code == 200, done.text
    listed = (await owner.client.get("/api/credentials")).json()["items"]
    [credential] = [c for c in listed if c["account_email"] == email]
    return str(credential["id"])


async def account(env: Env, pool: asyncpg.Pool, google: FakeGoogle) -> Account:
    """A new owner with a Google account connected the way a user connects one."""
    env.gmail.accept_tokens_from(google)
    owner = await new_owner(pool, env.url)
    email = unique_email("grant")
    box = env.gmail.mailbox(email, f"unused-{uuid.uuid4().hex}")
    return Account(owner, email, await connect(env, google, owner, email), box)


async def reading(acct: Account, receiver: Receiver, path: str, **action: Any) -> dict[str, Any]:
    """A gmail.receive-email workflow on the account's mailbox posting to the receiver."""
    body = {
        "name": f"mail {path}",
        "trigger": {"type": "gmail.receive-email", "config": {"mailbox": acct.credential_id}},
        "action": action
        or {
            "type": "http.request",
            "config": {"url": receiver.url + path, "body": {"subject": "{{ trigger.subject }}"}},
        },
    }
    response = await acct.owner.client.post("/api/workflows", json=body)
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created


def revoke(env: Env, google: FakeGoogle, acct: Account) -> None:
    """The account holder removes hookyard's access at Google."""
    google.revoke_account(acct.email)
    env.gmail.revoke(acct.box)


async def push(env: Env, acct: Account) -> None:
    async with httpx.AsyncClient(base_url=env.url) as http:
        response = await http.post(PUSH, json=push_body(acct.email, acct.box.history_id))
    assert response.status_code == 204, response.text


async def shown(acct: Account, what: str) -> dict[str, Any]:
    response = await acct.owner.client.get(f"/api/{what}")
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def _true(value: object) -> object:
    return value


async def sender(acct: Account) -> dict[str, Any]:
    """A webhook-triggered gmail.send-email workflow on the account (not paused with the mailbox)."""
    endpoint = await create_endpoint(acct.owner)
    body = {
        "name": "send",
        "trigger": {"type": "webhook.received", "config": {"endpoint_id": endpoint["id"]}},
        "action": {
            "type": "gmail.send-email",
            "credential_id": acct.credential_id,
            "config": {"to": "someone@example.test", "subject": "Hi {{ trigger.body.subject }}", "text": "hello"},
        },
    }
    response = await acct.owner.client.post("/api/workflows", json=body)
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created


async def settled(pool: asyncpg.Pool, acct: Account) -> None:
    """The mailbox is watched and its first sync done: it idles until a push or a timer."""
    await wait_for(lambda: _true(acct.box.watches), timeout=30)
    await wait_for(lambda: _synced(pool, acct), timeout=30)


async def _synced(pool: asyncpg.Pool, acct: Account) -> bool:
    return (await mailbox_row(pool, acct.credential_id))["last_sync_at"] is not None


async def run_once(acct: Account, workflow: dict[str, Any]) -> dict[str, Any]:
    """Run a workflow now; returns its execution once finished."""
    run = await acct.owner.client.post(f"/api/workflows/{workflow['id']}/run", json={"subject": "x"})
    assert run.status_code == 202, run.text
    execution_id = run.json()["execution_id"]

    async def finished() -> dict[str, Any] | None:
        execution = await shown(acct, f"executions/{execution_id}")
        return execution if execution["status"] in {"failed", "succeeded", "cancelled"} else None

    result: dict[str, Any] = await wait_for(finished, timeout=30)
    return result


async def test_a_revoked_grant_fails_the_first_send_for_good_and_marks_the_credential(
    env, pool, fake_google_server, receiver
) -> None:
    acct = await account(env, pool, fake_google_server)
    await reading(acct, receiver, f"/r/{uuid.uuid4().hex}")
    send = await sender(acct)
    await settled(pool, acct)
    revoke(env, fake_google_server, acct)
    execution = await run_once(acct, send)
    assert execution["status"] == "failed" and execution["attempts"] == 1
    assert "needs to be reconnected (revoked" in execution["error"] and "invalid_grant" in execution["error"]
    credential = await shown(acct, f"credentials/{acct.credential_id}")
    assert credential["status"] == "needs_reconnect" and credential["status_reason"].startswith("revoked: ")
    # Exactly one forced refresh: the 401 was not taken for a flaky network.
    assert len(fake_google_server.refresh_calls) == 1


async def test_a_dead_grant_pauses_the_mailbox_triggers_and_cancels_their_queued_runs(
    env, pool, fake_google_server, receiver
) -> None:
    acct = await account(env, pool, fake_google_server)
    reader = await reading(acct, receiver, f"/r/{uuid.uuid4().hex}")
    send = await sender(acct)
    await settled(pool, acct)
    revoke(env, fake_google_server, acct)
    await run_once(acct, send)
    workflow = await shown(acct, f"workflows/{reader['id']}")
    # The owner's choice is untouched; hookyard's pause is its own state.
    assert workflow["active"] is True and workflow["paused_reason"] == "credential_needs_reconnect"
    handle = env.temporal.get_workflow_handle(mailbox_workflow_id(acct.credential_id))
    await wait_for(lambda: _closed(handle), timeout=30)
    assert (await mailbox_row(pool, acct.credential_id))["status"] == "stopped"


async def test_a_push_for_a_mailbox_whose_grant_is_dead_starts_no_sync(env, pool, fake_google_server, receiver) -> None:
    acct = await account(env, pool, fake_google_server)
    path = f"/r/{uuid.uuid4().hex}"
    await reading(acct, receiver, path)
    await settled(pool, acct)
    revoke(env, fake_google_server, acct)
    # The mailbox workflow meets the dead grant itself (the sweep, a renewal or a push would).
    acct.box.deliver(subject="while revoked")
    await push(env, acct)
    credential = await wait_for(lambda: _needs_reconnect(acct), timeout=30)
    assert credential["status_reason"].startswith("revoked: ")
    handle = env.temporal.get_workflow_handle(mailbox_workflow_id(acct.credential_id))
    await wait_for(lambda: _closed(handle), timeout=30)
    calls = len(acct.box.calls)
    refreshes = len(fake_google_server.refresh_calls)
    for _ in range(3):
        acct.box.deliver(subject="still revoked")
        await push(env, acct)
    await asyncio.sleep(2.0)
    assert len(acct.box.calls) == calls and len(fake_google_server.refresh_calls) == refreshes
    assert (await handle.describe()).status != WorkflowExecutionStatus.RUNNING
    assert receiver.to(path) == []


async def test_reconnecting_resumes_exactly_the_paused_workflows_and_mail_from_meanwhile_fires_once(
    env, pool, fake_google_server, receiver
) -> None:
    acct = await account(env, pool, fake_google_server)
    kept, off = f"/r/{uuid.uuid4().hex}", f"/r/{uuid.uuid4().hex}"
    resumed = await reading(acct, receiver, kept)
    stays_off = await reading(acct, receiver, off)
    send = await sender(acct)
    await settled(pool, acct)
    acct.box.deliver(subject="before")
    await push(env, acct)
    await wait_for(lambda: _true(receiver.to(kept)), timeout=30)
    revoke(env, fake_google_server, acct)
    await run_once(acct, send)
    # The owner deactivates one of the paused workflows: that choice must survive the reconnect.
    response = await acct.owner.client.post(f"/api/workflows/{stays_off['id']}/deactivate")
    assert response.status_code == 200 and response.json()["paused_reason"] is None
    acct.box.deliver(subject="while disconnected")
    await push(env, acct)
    watches = len(acct.box.watches)

    assert await connect(env, fake_google_server, acct.owner, acct.email) == acct.credential_id

    credential = await shown(acct, f"credentials/{acct.credential_id}")
    assert credential["status"] == "active" and credential["status_reason"] is None
    workflow = await shown(acct, f"workflows/{resumed['id']}")
    assert workflow["active"] is True and workflow["paused_reason"] is None
    other = await shown(acct, f"workflows/{stays_off['id']}")
    assert other["active"] is False and other["paused_reason"] is None
    await wait_for(lambda: _true(len(acct.box.watches) > watches), timeout=30)  # the watch is re-armed
    await wait_for(lambda: _count(receiver, kept, 2), timeout=30)
    await asyncio.sleep(1.5)
    subjects = [orjson.loads(r.body)["subject"] for r in receiver.to(kept)]
    assert subjects == ["before", "while disconnected"]
    assert [orjson.loads(r.body)["subject"] for r in receiver.to(off)] == ["before"]
    assert [e["subject"] for e in await gmail_events(pool, acct.credential_id)] == ["before", "while disconnected"]


async def test_a_grant_without_the_scopes_needs_reconnecting_for_that_reason(
    env, pool, fake_google_server, receiver
) -> None:
    acct = await account(env, pool, fake_google_server)
    send = await sender(acct)
    acct.box.scopes_missing = True
    execution = await run_once(acct, send)
    assert execution["status"] == "failed" and "scopes_missing" in execution["error"]
    credential = await shown(acct, f"credentials/{acct.credential_id}")
    assert credential["status"] == "needs_reconnect"
    assert (
        credential["status_reason"].startswith("scopes_missing: ")
        and "insufficientPermissions" in (credential["status_reason"])
    )
    assert fake_google_server.refresh_calls == []  # a refresh cannot add scopes


async def test_a_refused_watch_is_a_trigger_sync_error_with_gmails_reason(
    env, pool, fake_google_server, receiver
) -> None:
    acct = await account(env, pool, fake_google_server)
    acct.box.watch_refused = True
    reader = await reading(acct, receiver, "/refused")

    async def refused() -> dict[str, Any] | None:
        workflow = await shown(acct, f"workflows/{reader['id']}")
        return workflow if workflow["trigger_sync"]["state"] == "error" else None

    workflow = await wait_for(refused, timeout=30)
    assert "User not authorized" in workflow["trigger_sync"]["error"]
    assert workflow["trigger_sync"]["watch"]["state"] == "refused"
    credential = await shown(acct, f"credentials/{acct.credential_id}")
    assert credential["mailbox"]["state"] == "refused" and "User not authorized" in credential["mailbox"]["error"]
    # The sweep's sync does not hide the refusal; a later successful watch clears it.
    acct.box.watch_refused = False
    await acct.owner.client.post(f"/api/workflows/{reader['id']}/deactivate")
    await acct.owner.client.post(f"/api/workflows/{reader['id']}/activate")

    async def watching() -> dict[str, Any] | None:
        workflow = await shown(acct, f"workflows/{reader['id']}")
        return workflow if workflow["trigger_sync"].get("watch", {}).get("state") == "watching" else None

    workflow = await wait_for(watching, timeout=30)
    assert workflow["trigger_sync"]["state"] == "synced" and workflow["trigger_sync"]["watch"]["last_watched_at"]
    assert workflow["trigger_sync"]["watch"]["error"] is None and workflow["trigger_sync"]["watch"]["expires_at"]
    await push(env, acct)

    async def pushed() -> object:
        return (await shown(acct, f"workflows/{reader['id']}"))["trigger_sync"]["watch"]["last_push_at"]

    await wait_for(pushed, timeout=30)  # noted when the dispatcher forwards the push


async def test_a_watch_whose_renewals_have_failed_for_days_shows_as_expiring(pool, keyring) -> None:
    async with pool.acquire() as conn:
        owner_id, _ = await create_owner(conn, "expiring")
    credential = await connect_google(pool, keyring, owner_id, unique_email(), "tok-expiring")
    await pool.execute(
        "UPDATE gmail_mailboxes SET watch_expiration = now() + interval '1 day', watch_renewed_at = now() "
        "- interval '6 days' WHERE credential_id = $1",
        UUID(credential),
    )
    async with pool.acquire() as conn:
        health = await mailbox_health(conn, owner_id, UUID(credential))
    assert health is not None and health["state"] == "expiring" and health["error"] is None


async def test_deleting_a_credential_in_use_is_refused_naming_the_workflows(
    env, pool, fake_google_server, receiver
) -> None:
    acct = await account(env, pool, fake_google_server)
    reader = await reading(acct, receiver, "/in-use")
    response = await acct.owner.client.delete(f"/api/credentials/{acct.credential_id}")
    assert response.status_code == 409
    error = response.json()["error"]
    assert error["code"] == "credential_in_use" and reader["id"] in error["message"]
    assert fake_google_server.revoked == []
    assert (await shown(acct, f"credentials/{acct.credential_id}"))["status"] == "active"
    # Once no workflow uses it, it goes (revoked at Google first).
    assert (await acct.owner.client.delete(f"/api/workflows/{reader['id']}")).status_code == 204
    assert (await acct.owner.client.delete(f"/api/credentials/{acct.credential_id}")).status_code == 204
    assert len(fake_google_server.revoked) == 1


async def test_a_rotated_token_is_refreshed_once_across_two_workers_and_both_calls_succeed(
    env, pool, keyring, settings, fake_google_server
) -> None:
    acct = await account(env, pool, fake_google_server)
    # Google rotated the access token: the stored one is refused, the refresh token still works.
    env.gmail.revoke(acct.box)
    owner_id, credential_id = UUID(acct.owner.id), UUID(acct.credential_id)
    seen: list[str] = []

    async def profile(loaded: Loaded) -> dict[str, Any]:
        token = loaded.secret["access_token"]
        async with httpx.AsyncClient() as http:
            response = await http.get(
                f"{env.gmail.url}/gmail/v1/users/me/profile", headers={"authorization": f"Bearer {token}"}
            )
        if response.status_code == 401:
            raise TokenRejected("Gmail getProfile answered 401")
        seen.append(token)
        body: dict[str, Any] = response.json()
        return body

    pools = [await db.create_pool(settings.database_url, min_size=1, max_size=2) for _ in range(2)]
    try:
        async with httpx.AsyncClient() as http:
            workers = [Vault(p, keyring, http, google_from_settings(settings.for_google())) for p in pools]
            answers = await asyncio.gather(*(w.call(owner_id, credential_id, {"google"}, profile) for w in workers))
    finally:
        for p in pools:
            await p.close()
    assert [a["emailAddress"] for a in answers] == [acct.email, acct.email]
    assert len(fake_google_server.refresh_calls) == 1
    assert len(set(seen)) == 1
    assert (await shown(acct, f"credentials/{acct.credential_id}"))["status"] == "active"


async def test_a_second_401_with_a_fresh_token_marks_the_grant_revoked(
    env, pool, keyring, settings, fake_google_server
) -> None:
    acct = await account(env, pool, fake_google_server)
    calls = 0

    async def refused(loaded: Loaded) -> None:
        nonlocal calls
        calls += 1
        raise TokenRejected("Gmail send answered 401")

    async with httpx.AsyncClient() as http:
        vault = Vault(pool, keyring, http, google_from_settings(settings.for_google()))
        with pytest.raises(CredentialUnusable, match="revoked"):
            await vault.call(UUID(acct.owner.id), UUID(acct.credential_id), {"google"}, refused)
    assert calls == 2 and len(fake_google_server.refresh_calls) == 1
    credential = await shown(acct, f"credentials/{acct.credential_id}")
    assert credential["status"] == "needs_reconnect" and credential["status_reason"].startswith("revoked: ")


async def _needs_reconnect(acct: Account) -> dict[str, Any] | None:
    credential = await shown(acct, f"credentials/{acct.credential_id}")
    return credential if credential["status"] == "needs_reconnect" else None


async def _closed(handle: Any) -> bool:
    return bool((await handle.describe()).status != WorkflowExecutionStatus.RUNNING)


async def _count(receiver: Receiver, path: str, n: int) -> bool:
    return len(receiver.to(path)) >= n


async def test_a_dead_grant_is_marked_and_logged_once_however_many_callers_find_out(
    env, pool, keyring, settings, fake_google_server, caplog
) -> None:
    acct = await account(env, pool, fake_google_server)
    revoke(env, fake_google_server, acct)

    async def profile(loaded: Loaded) -> None:
        raise TokenRejected("Gmail getProfile answered 401")

    pools = [await db.create_pool(settings.database_url, min_size=1, max_size=2) for _ in range(3)]
    try:
        async with httpx.AsyncClient() as http:
            workers = [Vault(p, keyring, http, google_from_settings(settings.for_google())) for p in pools]
            with caplog.at_level("WARNING", logger="oauth.vault"):
                results = await asyncio.gather(
                    *(w.call(UUID(acct.owner.id), UUID(acct.credential_id), {"google"}, profile) for w in workers),
                    return_exceptions=True,
                )
    finally:
        for p in pools:
            await p.close()
    assert all(isinstance(r, CredentialUnusable) and "revoked" in str(r) for r in results)
    assert len([r for r in caplog.records if "needs reconnecting" in r.getMessage()]) == 1
    assert len(fake_google_server.refresh_calls) == 1


async def test_activating_a_paused_workflow_keeps_it_paused_until_the_reconnect(
    env, pool, fake_google_server, receiver
) -> None:
    acct = await account(env, pool, fake_google_server)
    reader = await reading(acct, receiver, f"/r/{uuid.uuid4().hex}")
    send = await sender(acct)
    await settled(pool, acct)
    revoke(env, fake_google_server, acct)
    await run_once(acct, send)
    response = await acct.owner.client.post(f"/api/workflows/{reader['id']}/activate")
    assert response.status_code == 200
    assert response.json()["active"] is True and response.json()["paused_reason"] == "credential_needs_reconnect"
    assert await pool.fetchval("SELECT active FROM workflows WHERE id = $1", UUID(reader["id"])) is False
    run = await acct.owner.client.post(f"/api/workflows/{reader['id']}/run", json={})
    assert run.status_code == 409 and "paused (credential_needs_reconnect)" in run.json()["error"]["message"]


async def test_a_reconnect_after_the_cursor_expired_syncs_the_newest_mail_once(
    env, pool, fake_google_server, receiver
) -> None:
    acct = await account(env, pool, fake_google_server)
    path = f"/r/{uuid.uuid4().hex}"
    await reading(acct, receiver, path)
    send = await sender(acct)
    await settled(pool, acct)
    revoke(env, fake_google_server, acct)
    await run_once(acct, send)
    acct.box.deliver(subject="while disconnected, long ago")
    acct.box.expire_history()  # Google kept no history from before: the cursor is gone

    await connect(env, fake_google_server, acct.owner, acct.email)

    await wait_for(lambda: _count(receiver, path, 1), timeout=30)
    await asyncio.sleep(1.5)
    assert [orjson.loads(r.body)["subject"] for r in receiver.to(path)] == ["while disconnected, long ago"]
    assert "GET /messages" in acct.box.calls  # the bounded full sync, not history


async def test_a_workflow_the_owner_activated_while_the_grant_was_dead_is_watched_again_after_the_reconnect(
    env, pool, fake_google_server, receiver
) -> None:
    acct = await account(env, pool, fake_google_server)
    path = f"/r/{uuid.uuid4().hex}"
    off = await reading(acct, receiver, path)
    await acct.owner.client.post(f"/api/workflows/{off['id']}/deactivate")
    send = await sender(acct)
    revoke(env, fake_google_server, acct)
    await run_once(acct, send)
    # Activated by its owner while the grant is dead: it is not hookyard's pause, and its
    # mailbox workflow meets the dead grant and stops.
    assert (await acct.owner.client.post(f"/api/workflows/{off['id']}/activate")).status_code == 200
    handle = env.temporal.get_workflow_handle(mailbox_workflow_id(acct.credential_id))
    await wait_for(lambda: _stopped_mailbox(pool, acct), timeout=30)
    await wait_for(lambda: _closed(handle), timeout=30)
    watches = len(acct.box.watches)

    await connect(env, fake_google_server, acct.owner, acct.email)

    await wait_for(lambda: _true(len(acct.box.watches) > watches), timeout=30)
    await wait_for(lambda: _synced(pool, acct), timeout=30)
    acct.box.deliver(subject="after the reconnect")
    await push(env, acct)
    await wait_for(lambda: _count(receiver, path, 1), timeout=30)
    assert [orjson.loads(r.body)["subject"] for r in receiver.to(path)] == ["after the reconnect"]


async def _stopped_mailbox(pool: asyncpg.Pool, acct: Account) -> bool:
    return bool((await mailbox_row(pool, acct.credential_id))["status"] == "stopped")
