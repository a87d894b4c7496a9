"""`hookyard worker --processes N` and `hookyard serve --workers N`: copies of one process.

The copies are forked by a small parent (hookyard/copies.py); they must share the work, never
run it twice, drain on SIGTERM like a single process, and be replaced when one dies.
"""

from __future__ import annotations

import os
import re
import signal
import uuid

import httpx
import pytest

from hookyard import services
from tests.conftest import Receiver, Stack, wait_for
from tests.factories import create_endpoint, create_workflow
from tests.integration.test_replicas import _deliver
from tests.processes import AppProcess, assert_ran_exactly_once, deployment, owner_client, settled

pytestmark = pytest.mark.integration


async def _polling(worker: AppProcess, copies: int) -> None:
    """Wait until `copies` worker processes have said they poll the task queue (restarts count)."""

    async def enough() -> bool:
        return worker.log().count("worker polling task queue") >= copies

    await wait_for(enough, timeout=60, interval=0.2)


def _finished(metrics_text: str) -> float:
    """hookyard_executions_finished_total summed over its labels, from one /metrics page."""
    pattern = r"^hookyard_executions_finished_total\{[^}]*\} ([0-9.e+]+)$"
    return sum(float(m) for m in re.findall(pattern, metrics_text, re.MULTILINE))


async def test_two_worker_processes_share_the_executions_and_run_each_once(stack: Stack, receiver: Receiver) -> None:
    metrics_port = services.free_port()
    async with deployment(stack) as deploy:
        api = await deploy.start("serve")
        await deploy.start("dispatch")
        worker = deploy.spawn("worker", HOOKYARD_WORKER_PROCESSES="2", HOOKYARD_METRICS_PORT=str(metrics_port))
        await _polling(worker, 2)
        async with await owner_client(deploy, api[0]) as owner:
            endpoint = await create_endpoint(owner)
            paths = {}
            for _ in range(2):
                path = f"/copies/{uuid.uuid4().hex}"
                workflow = await create_workflow(owner, endpoint["id"], receiver.url + path, concurrency_limit=100)
                paths[workflow["id"]] = path

            event_ids = await _deliver(api, endpoint, 300)
            await settled(deploy.pool, event_ids, workflows=2, timeout=150)

        await assert_ran_exactly_once(deploy.pool, receiver, event_ids, paths)
        async with httpx.AsyncClient(timeout=5) as http:
            per_copy = [
                _finished((await http.get(f"http://127.0.0.1:{port}/metrics")).text)
                for port in (metrics_port, metrics_port + 1)
            ]
        assert all(n > 0 for n in per_copy), f"one copy ran nothing: {per_copy}"
        assert sum(per_copy) == 600


async def test_a_worker_copy_that_dies_is_started_again(stack: Stack) -> None:
    async with deployment(stack) as deploy:
        worker = deploy.spawn("worker", HOOKYARD_WORKER_PROCESSES="2")
        await _polling(worker, 2)
        first = services.child_pids(worker.popen.pid)
        assert len(first) == 2
        os.kill(first[0], signal.SIGKILL)

        async def replaced() -> bool:
            now = services.child_pids(worker.popen.pid)
            return len(now) == 2 and first[0] not in now and first[1] in now

        await wait_for(replaced, timeout=30, interval=0.2)
        await _polling(worker, 3)


async def test_sigterm_drains_every_copy_and_the_parent_exits_0(stack: Stack) -> None:
    async with deployment(stack) as deploy:
        worker = deploy.spawn("worker", HOOKYARD_WORKER_PROCESSES="2")
        api = deploy.spawn("serve", HOOKYARD_SERVE_WORKERS="2")
        await deploy.started(api)
        await _polling(worker, 2)
        copies = services.child_pids(worker.popen.pid) + services.child_pids(api.popen.pid)
        assert len(copies) == 4

        worker.terminate()
        api.terminate()

        assert await worker.exit_code(timeout=45) == 0, worker.log_tail()
        assert await api.exit_code(timeout=45) == 0, api.log_tail()
        assert not [pid for pid in copies if os.path.exists(f"/proc/{pid}")]
