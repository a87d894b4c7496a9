"""`hookyard dev` supervises its servers like its apps, and its Temporal UI is read-only.

One dev stack for the module (it takes ~20 s to come up). The tests run in file order: the
last one leaves the stack stopped.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest

from hookyard import services
from tests.conftest import b64secret
from tests.factories import signed

_PORT_FLAGS = (
    "port",
    "postgres-port",
    "redis-port",
    "temporal-port",
    "temporal-ui-port",
    "dispatcher-metrics-port",
    "worker-metrics-port",
)
_SERVER_BINARIES = {"postgres": "postgres", "temporal": "temporal", "redis": "redis-server"}


@dataclass
class DevStack:
    data_dir: Path
    ports: dict[str, int]
    proc: subprocess.Popen[bytes]
    console: Path

    @property
    def api(self) -> str:
        return f"http://127.0.0.1:{self.ports['port']}"

    @property
    def ui(self) -> str:
        return f"http://127.0.0.1:{self.ports['temporal-ui-port']}"

    def output(self) -> str:
        return self.console.read_text(errors="replace")

    def server_pid(self, name: str) -> int:
        """The pid of one of the stack's servers (a direct child of `hookyard dev`)."""
        for pid in services.child_pids(self.proc.pid):
            argv = services.cmdline(pid)
            # Redis retitles itself ("redis-server 127.0.0.1:PORT"), so match the start.
            if argv and Path(argv[0].split()[0]).name == _SERVER_BINARIES[name]:
                return pid
        raise AssertionError(f"no {name} process under hookyard dev:\n{self.output()[-3000:]}")

    def wait_for_output(self, text: str, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while text not in self.output():
            assert self.proc.poll() is None, self.output()[-3000:]
            assert time.monotonic() < deadline, f"{text!r} not printed:\n{self.output()[-3000:]}"
            time.sleep(0.2)


def _descendants(root: int) -> set[int]:
    tree, grew = {root}, True
    while grew:
        grew = False
        for pid in list(tree):
            for child in services.child_pids(pid):
                if child not in tree:
                    tree.add(child)
                    grew = True
    return tree


def _start(data_dir: Path) -> DevStack:
    ports = {flag: services.free_port() for flag in _PORT_FLAGS}
    argv = [sys.executable, "-m", "hookyard.cli", "dev", "--data-dir", str(data_dir)]
    for flag, port in ports.items():
        argv += [f"--{flag}", str(port)]
    # The stack's own servers, and its own egress default (loopback, for the receiver below).
    drop = {"DATABASE_URL", "REDIS_URL", "TEMPORAL_ADDRESS", "HOOKYARD_EGRESS_ALLOW"}
    env = {k: v for k, v in os.environ.items() if k not in drop}
    console = data_dir / "console.log"
    with console.open("wb") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    stack = DevStack(data_dir, ports, proc, console)
    deadline = time.monotonic() + 120
    while True:
        assert proc.poll() is None, stack.output()
        try:
            if httpx.get(f"{stack.api}/readyz", timeout=1).status_code == 200:
                return stack
        except httpx.HTTPError:
            pass
        assert time.monotonic() < deadline, "hookyard dev did not become ready"
        time.sleep(0.3)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevStack]:
    dev = _start(tmp_path_factory.mktemp("dev"))
    try:
        yield dev
    finally:
        if dev.proc.poll() is None:
            os.kill(dev.proc.pid, signal.SIGTERM)
            try:
                dev.proc.wait(90)
            except subprocess.TimeoutExpired:
                os.killpg(dev.proc.pid, signal.SIGKILL)


class _Receiver:
    """An action target on loopback recording the JSON bodies it is sent."""

    def __init__(self) -> None:
        self.bodies: list[dict[str, object]] = []
        received = self.bodies

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("content-length", "0"))
                received.append(json.loads(self.rfile.read(length) or b"{}"))
                self.send_response(200)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


def _post_until_accepted(url: str, body: bytes, secret: str, timeout: float = 60) -> None:
    """Send as a real sender does: the same message id again until a 2xx."""
    msg_id, deadline = f"msg_{uuid.uuid4().hex}", time.monotonic() + timeout
    while True:
        try:
            answer = httpx.post(url, content=body, headers=signed("standard-webhooks", secret, body, msg_id))
            if answer.status_code < 300:
                return
            assert answer.status_code >= 500, answer.text
        except httpx.HTTPError:
            pass
        assert time.monotonic() < deadline, "the webhook was never accepted"
        time.sleep(0.5)


def test_temporal_ui_refuses_every_write_call(stack: DevStack):
    for method in ("POST", "PUT", "PATCH", "DELETE"):
        answer = httpx.request(method, f"{stack.ui}/api/v1/namespaces/default/workflows/automation-x/terminate")
        assert answer.status_code == 403, (method, answer.text)
        assert answer.json()["error"] == "read_only"


def test_temporal_ui_reports_its_write_actions_disabled_and_still_reads(stack: DevStack):
    settings = httpx.get(f"{stack.ui}/api/v1/settings").json()
    assert settings["DisableWriteActions"] is True
    assert settings["WorkflowTerminateDisabled"] is True
    assert settings["BatchActionsDisabled"] is True
    assert settings["Codec"]["Endpoint"].startswith(f"{stack.api}/codec/ui/")
    listed = httpx.get(f"{stack.ui}/api/v1/namespaces/default/workflows")
    assert listed.status_code == 200, listed.text


def test_codec_token_is_in_no_process_argv(stack: DevStack):
    token = (stack.data_dir / "codec.token").read_text().strip()
    stack_pids = _descendants(stack.proc.pid)
    assert len(stack_pids) >= 7  # dev, postgres (+ backends), redis, temporal, api, dispatcher, worker
    for stat in Path("/proc").glob("[0-9]*"):
        argv = " ".join(services.cmdline(int(stat.name)))
        assert token not in argv and quote(token, safe="") not in argv, f"pid {stat.name}: {argv[:200]}"


def _owner_api(stack: DevStack, name: str) -> httpx.Client:
    created = subprocess.run(
        [sys.executable, "-m", "hookyard.cli", "owners", "create", name, "--data-dir", str(stack.data_dir)],
        capture_output=True,
        text=True,
        check=True,
        env={k: v for k, v in os.environ.items() if k != "DATABASE_URL"},
    )
    key = created.stdout.split("API key: ")[1].split()[0]
    return httpx.Client(base_url=stack.api, headers={"authorization": f"Bearer {key}"}, timeout=10)


def _http_workflow(api: httpx.Client, endpoint_id: str, url: str) -> str:
    workflow = api.post(
        "/api/workflows",
        json={
            "name": url[:100],
            "trigger": {"type": "webhook.received", "config": {"endpoint_id": endpoint_id}},
            "action": {"type": "http.request", "config": {"url": url, "method": "GET"}},
        },
    )
    assert workflow.status_code == 201, workflow.text
    return str(workflow.json()["id"])


def test_actions_reach_a_loopback_receiver_but_never_the_stacks_own_ports(stack: DevStack):
    api, secret, receiver = _owner_api(stack, "prober"), b64secret(), _Receiver()
    endpoint = api.post("/api/endpoints", json={"name": "e", "scheme": "standard-webhooks", "secret": secret})
    assert endpoint.status_code == 201, endpoint.text
    endpoint_id = endpoint.json()["id"]
    ok = api.post(
        "/api/workflows",
        json={
            "name": "receiver",
            "trigger": {"type": "webhook.received", "config": {"endpoint_id": endpoint_id}},
            "action": {"type": "http.request", "config": {"url": receiver.url, "body": {"n": 1}}},
        },
    )
    assert ok.status_code == 201, ok.text
    probes = [
        _http_workflow(api, endpoint_id, f"{stack.ui}/api/v1/settings"),
        _http_workflow(api, endpoint_id, f"{stack.api}/metrics"),
        _http_workflow(api, endpoint_id, f"http://localhost:{stack.ports['temporal-port']}/"),
    ]
    _post_until_accepted(f"{stack.api}/hooks/{endpoint_id}", b'{"n": 1}', secret)
    deadline = time.monotonic() + 60
    for workflow_id in probes:
        while True:
            items = api.get(f"/api/workflows/{workflow_id}/executions").json()["items"]
            if items and items[0]["status"] in ("succeeded", "failed"):
                break
            assert time.monotonic() < deadline, f"probe never finished:\n{stack.output()[-3000:]}"
            time.sleep(0.3)
        assert items[0]["status"] == "failed", items[0]
        assert "HOOKYARD_EGRESS_DENY" in items[0]["error"], items[0]["error"]
    assert {"n": 1} in receiver.bodies


def test_killed_postgres_and_temporal_are_restarted_and_a_webhook_accepted_afterwards_runs(stack: DevStack):
    created = subprocess.run(
        [sys.executable, "-m", "hookyard.cli", "owners", "create", "acme", "--data-dir", str(stack.data_dir)],
        capture_output=True,
        text=True,
        check=True,
        env={k: v for k, v in os.environ.items() if k != "DATABASE_URL"},
    )
    key = created.stdout.split("API key: ")[1].split()[0]
    api = httpx.Client(base_url=stack.api, headers={"authorization": f"Bearer {key}"}, timeout=10)
    secret, receiver = b64secret(), _Receiver()
    endpoint = api.post("/api/endpoints", json={"name": "e", "scheme": "standard-webhooks", "secret": secret})
    assert endpoint.status_code == 201, endpoint.text
    workflow = api.post(
        "/api/workflows",
        json={
            "name": "notify",
            "trigger": {"type": "webhook.received", "config": {"endpoint_id": endpoint.json()["id"]}},
            "action": {"type": "http.request", "config": {"url": receiver.url, "body": {"n": "{{ trigger.body.n }}"}}},
        },
    )
    assert workflow.status_code == 201, workflow.text
    postgres, temporal = stack.server_pid("postgres"), stack.server_pid("temporal")

    os.kill(postgres, signal.SIGKILL)
    os.kill(temporal, signal.SIGKILL)

    stack.wait_for_output("postgres is back")
    stack.wait_for_output("temporal is back")
    assert stack.server_pid("postgres") != postgres and stack.server_pid("temporal") != temporal
    _post_until_accepted(f"{stack.api}/hooks/{endpoint.json()['id']}", b'{"n": 7}', secret)
    deadline = time.monotonic() + 90
    while {"n": 7} not in receiver.bodies:
        assert time.monotonic() < deadline, f"the webhook never ran:\n{stack.output()[-3000:]}"
        time.sleep(0.3)
    assert stack.proc.poll() is None


def test_a_server_that_cannot_come_back_stops_the_stack_with_a_failure_exit(stack: DevStack):
    redis = stack.server_pid("redis")
    holder = socket.socket()
    holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        os.kill(redis, signal.SIGKILL)
        deadline = time.monotonic() + 5
        while True:  # take the port as soon as the dead server lets go of it
            try:
                holder.bind(("127.0.0.1", stack.ports["redis-port"]))
                break
            except OSError:
                assert time.monotonic() < deadline
                time.sleep(0.01)
        holder.listen()
        code = stack.proc.wait(120)
    finally:
        holder.close()
    assert code == 1, stack.output()[-3000:]
    assert "redis could not be restarted" in stack.output()
