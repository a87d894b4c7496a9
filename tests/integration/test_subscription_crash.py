"""A worker killed (kill -9) in the middle of a delivery: the delivery is sent again by another
worker with the same `webhook-id`, and the notification is neither lost nor queued twice."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from standardwebhooks import Webhook

from hookyard import services
from tests.conftest import Owner, Receiver, Recorded, Stack, new_owner, serve, wait_for
from tests.factories import create_endpoint, create_workflow, executions
from tests.integration.test_resilience import isolated

pytestmark = [pytest.mark.integration]


class SlowReceiver(Receiver):
    """A receiver that hangs on the paths in `slow` (the delivery to be cut off mid-flight)."""

    def __init__(self) -> None:
        super().__init__()
        self.slow: dict[str, float] = {}
        # Set at teardown, so a hanging handler ends at once instead of holding the server's
        # shutdown for the rest of its delay.
        self.released = asyncio.Event()

    async def app(self, scope: dict, receive, send) -> None:  # type: ignore[no-untyped-def,override]
        delay = self.slow.get(scope["path"], 0.0)
        if not delay:
            await super().app(scope, receive, send)
            return
        body = b""
        while True:
            msg = await receive()
            body += msg.get("body", b"")
            if not msg.get("more_body"):
                break
        self.requests.append(Recorded(scope["path"], {k.decode(): v.decode() for k, v in scope["headers"]}, body))
        # Cut off by the worker's death; nothing is answered.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.released.wait(), delay)


@pytest.fixture
async def slow_receiver() -> AsyncIterator[SlowReceiver]:
    receiver = SlowReceiver()
    async with serve(receiver.app, services.free_port(), lifespan="off") as url:  # type: ignore[arg-type]
        receiver.url = url
        yield receiver
        receiver.released.set()


async def test_a_worker_killed_during_a_delivery_does_not_duplicate_it(
    stack: Stack, slow_receiver: SlowReceiver
) -> None:
    receiver = slow_receiver
    hook, target = f"/hear/{uuid.uuid4().hex}", f"/fails/{uuid.uuid4().hex}"
    receiver.script(target, 400)
    async with isolated(stack, worker_in_process=False) as (iso, base_url, pool):
        assert iso.worker_proc is not None
        await iso.wait_polling(iso.worker_proc)
        owner: Owner = await new_owner(pool, base_url)
        sub = (await owner.client.post("/api/subscriptions", json=_subscription(receiver.url + hook))).json()
        endpoint = await create_endpoint(owner.client)
        workflow = await create_workflow(owner.client, endpoint["id"], receiver.url + target)
        receiver.slow[hook] = 60.0  # the delivery hangs in flight on the worker about to die

        run = await owner.client.post(f"/api/workflows/{workflow['id']}/run?shape=raw", json={})
        assert run.status_code == 202
        await wait_for(lambda: _count(receiver, hook, 1), timeout=30)
        iso.kill_worker()
        receiver.slow.clear()
        iso.spawn_worker()

        async def delivered() -> list[dict[str, Any]]:
            page = (await owner.client.get(f"/api/subscriptions/{sub['id']}/deliveries")).json()
            return [d for d in page["items"] if d["status"] == "succeeded"]

        [delivery] = await wait_for(delivered, timeout=60)
        await asyncio.sleep(1.0)
        requests = receiver.to(hook)
        assert len(requests) == 2 and delivery["attempts"] == 2
        assert len({r.headers["webhook-id"] for r in requests}) == 1
        for request in requests:
            assert Webhook(sub["secret"]).verify(request.body, request.headers)["type"] == "execution.failed"
        assert len(await executions(owner.client, workflow["id"])) == 1
        async with pool.acquire() as conn:
            assert (
                await conn.fetchval("SELECT count(*) FROM notifications WHERE owner_id = $1", uuid.UUID(owner.id)) == 1
            )
        await owner.client.aclose()


def _subscription(url: str) -> dict[str, Any]:
    return {"target_url": url, "event_types": ["execution.failed"]}


async def _count(receiver: Receiver, path: str, n: int) -> bool:
    return len(receiver.to(path)) >= n
