"""Temporary: pipeline through stores (until the API lands)."""
import time
from uuid import UUID

from ingest.signatures import SCHEMES
from schemas.store.endpoints import create_endpoint
from schemas.store.workflows import insert_workflow
from tests.conftest import b64secret, wait_for


async def test_smoke(pool, keyring, owner, http, receiver, pipeline):
    secret = b64secret()
    async with pool.acquire() as conn:
        ep = await create_endpoint(conn, keyring, UUID(owner.id), "e", "standard-webhooks", secret)
        wf = await insert_workflow(conn, UUID(owner.id), {
            "name": "w", "trigger_type": "webhook.received",
            "trigger_config": {"endpoint_id": str(ep["id"])}, "routing_key": str(ep["id"]),
            "action_type": "http.request",
            "action_config": {"url": receiver.url + "/smoke", "body": {"order": "{{ trigger.body.order }}"}},
            "credential_id": None, "active": True, "concurrency_limit": 10, "retry_policy": {}})
    body = b'{"order": 42}'
    t = time.time()
    headers = SCHEMES["standard-webhooks"].sign(body, secret, now=time.time())
    r = await http.post(f"/hooks/{ep['id']}", content=body, headers=headers)
    assert r.status_code == 202, r.text
    async def done():
        async with pool.acquire() as conn:
            return await conn.fetchval("SELECT status FROM executions WHERE workflow_id=$1 AND status='succeeded'", wf["id"])
    try:
        await wait_for(done)
    finally:
        async with pool.acquire() as conn:
            print([dict(r) for r in await conn.fetch("SELECT status, resolution FROM events")])
            print([dict(r) for r in await conn.fetch("SELECT status, error, attempts, signalled_at FROM executions")])
    print("latency", time.time() - t)
    assert receiver.to("/smoke")[0].body == b'{"order":42}'


async def test_debug(pool, keyring, owner, http, receiver, pipeline):
    import asyncio
    await asyncio.sleep(3)
    async with pool.acquire() as conn:
        print([dict(r) for r in await conn.fetch("SELECT status, resolution FROM events")])
        print([dict(r) for r in await conn.fetch("SELECT status, error, attempts, signalled_at FROM executions")])
