"""Session fixtures: the real PostgreSQL, Redis and Temporal servers, started once per session."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import shutil
import tempfile
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import httpx
import pytest
import uvicorn
from starlette.types import ASGIApp

from actions.egress import LOOPBACK
from hookyard import services
from oauth.crypto import Keyring, generate_key
from schemas import db
from schemas.migrate import migrate
from schemas.store.owners import create_owner
from settings import Settings, load_settings
from tests import fake_google

# Tests that need the real PostgreSQL, Redis and Temporal: everything under tests/integration/,
# and any test elsewhere whose fixtures reach the session `stack`. Marked here, once, so
# `pytest -m "not integration"` runs without those servers (README, "Tests").
_INTEGRATION_DIR = Path(__file__).parent / "integration"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        needs_stack = "stack" in getattr(item, "fixturenames", ())
        if needs_stack or _INTEGRATION_DIR in Path(str(item.path)).parents:
            item.add_marker(pytest.mark.integration)


@dataclass
class Stack:
    data_dir: Path
    database_url: str
    redis_url: str
    temporal_address: str
    processes: list[services.ManagedProcess]


@pytest.fixture(scope="session")
def stack() -> Iterator[Stack]:
    data_dir = Path(tempfile.mkdtemp(prefix="hookyard-test-"))
    procs: list[services.ManagedProcess] = []
    try:
        pg, database_url = services.start_postgres(data_dir, services.free_port(), durable=False)
        procs.append(pg)
        rd, redis_url = services.start_redis(data_dir, services.free_port())
        procs.append(rd)
        tp, temporal_address = services.start_temporal(data_dir, services.free_port())
        procs.append(tp)
        asyncio.run(migrate(database_url))
        yield Stack(data_dir, database_url, redis_url, temporal_address, procs)
    finally:
        for proc in reversed(procs):
            proc.stop()
        shutil.rmtree(data_dir, ignore_errors=True)


MASTER_KEY = generate_key()
# The fake Google OAuth server (tests/fake_google.py) listens here once `fake_google` is used.
FAKE_GOOGLE_PORT = services.free_port()
FAKE_GOOGLE = f"http://127.0.0.1:{FAKE_GOOGLE_PORT}"


def make_settings(stack: Stack, **overrides: object) -> Settings:
    """Settings for one test stack; fast timeouts so failure tests finish quickly."""
    values: dict[str, object] = {
        "database_url": stack.database_url,
        "redis_url": stack.redis_url,
        "temporal_address": stack.temporal_address,
        "port": services.free_port(),
        "master_keys": (("test", MASTER_KEY),),
        "dispatch_poll_interval_s": 0.2,
        "activity_heartbeat_timeout_s": 4.0,
        "automation_idle_timeout_s": 60.0,
        "secret_rotation_grace_s": 3600,
        "google_client_id": fake_google.CLIENT_ID,
        "google_client_secret": fake_google.CLIENT_SECRET,
        "google_authorize_url": f"{FAKE_GOOGLE}/auth",
        "google_token_url": f"{FAKE_GOOGLE}/token",
        "google_revoke_url": f"{FAKE_GOOGLE}/revoke",
        # Receivers and provider stand-ins listen on loopback, as in `hookyard dev`.
        "egress_allow": LOOPBACK,
    }
    values.update(overrides)
    return load_settings({}, **values)


@pytest.fixture(scope="session")
def settings(stack: Stack) -> Settings:
    return make_settings(stack)


@pytest.fixture(scope="session")
def keyring(settings: Settings) -> Keyring:
    return Keyring(settings.master_keys)


@pytest.fixture(scope="session")
async def pool(stack: Stack) -> AsyncIterator[asyncpg.Pool]:
    p = await db.create_pool(stack.database_url, min_size=1, max_size=5)
    yield p
    await p.close()


@contextlib.asynccontextmanager
async def serve(app: ASGIApp, port: int, lifespan: str = "on") -> AsyncIterator[str]:
    """Run an ASGI app with uvicorn on 127.0.0.1:port inside this event loop."""
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan=lifespan, interface="asgi3")
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()
        await asyncio.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task


@pytest.fixture(scope="session")
async def base_url(settings: Settings, keyring: Keyring) -> AsyncIterator[str]:
    """The hookyard HTTP app served for real on a local port."""
    from ingest.app import create_app

    async with serve(create_app(settings, keyring), settings.port) as url:
        yield url


@pytest.fixture(scope="session")
async def _fake_google_server() -> AsyncIterator[fake_google.FakeGoogle]:
    fake = fake_google.FakeGoogle()
    async with serve(fake.app(), FAKE_GOOGLE_PORT):
        yield fake


@pytest.fixture
def fake_google_server(_fake_google_server: fake_google.FakeGoogle) -> fake_google.FakeGoogle:
    """Google's OAuth endpoints, stood in locally; reset for each test."""
    _fake_google_server.reset()
    return _fake_google_server


@pytest.fixture
async def http(base_url: str) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=base_url, timeout=30) as client:
        yield client


@dataclass
class Owner:
    id: str
    key: str
    client: httpx.AsyncClient


async def new_owner(pool: asyncpg.Pool, base_url: str, name: str = "acme") -> Owner:
    async with pool.acquire() as conn:
        owner_id, key = await create_owner(conn, name)
    client = httpx.AsyncClient(base_url=base_url, headers={"authorization": f"Bearer {key}"}, timeout=30)
    return Owner(str(owner_id), key, client)


@pytest.fixture
async def owner(pool: asyncpg.Pool, base_url: str) -> AsyncIterator[Owner]:
    """A fresh owner with an API client, so tests never see each other's data."""
    o = await new_owner(pool, base_url)
    yield o
    await o.client.aclose()


@pytest.fixture
async def other_owner(pool: asyncpg.Pool, base_url: str) -> AsyncIterator[Owner]:
    o = await new_owner(pool, base_url, "globex")
    yield o
    await o.client.aclose()


def b64secret(raw: bytes = b"0123456789abcdef0123456789abcdef") -> str:
    return "whsec_" + base64.b64encode(raw).decode()


@dataclass
class Recorded:
    path: str
    headers: dict[str, str]
    body: bytes


class Receiver:
    """A local HTTP server standing in for an action's target; responses are programmable."""

    def __init__(self) -> None:
        self.requests: list[Recorded] = []
        self._scripts: dict[str, list[tuple[int, dict[str, str]]]] = {}
        self.url = ""
        self.delay_s = 0.0
        self.bodies: dict[str, bytes] = {}

    def script(self, path: str, *responses: int | tuple[int, dict[str, str]]) -> None:
        """Answer the next requests to `path` with these statuses (then 200)."""
        self._scripts[path] = [r if isinstance(r, tuple) else (r, {}) for r in responses]

    def to(self, path: str) -> list[Recorded]:
        return [r for r in self.requests if r.path == path]

    async def app(self, scope: dict, receive, send) -> None:  # type: ignore[no-untyped-def]
        body = b""
        while True:
            msg = await receive()
            body += msg.get("body", b"")
            if not msg.get("more_body"):
                break
        path = scope["path"]
        self.requests.append(Recorded(path, {k.decode(): v.decode() for k, v in scope["headers"]}, body))
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        script = self._scripts.get(path)
        status, headers = script.pop(0) if script else (200, {})
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [(k.encode(), v.encode()) for k, v in headers.items()],
            }
        )
        await send({"type": "http.response.body", "body": self.bodies.get(path, b'{"ok": true}')})


@pytest.fixture(scope="session")
async def receiver() -> AsyncIterator[Receiver]:
    r = Receiver()
    async with serve(r.app, services.free_port(), lifespan="off") as url:  # type: ignore[arg-type]
        r.url = url
        yield r


# Module scope: tests elsewhere insert rows directly and must never race a live dispatcher.
@pytest.fixture(scope="module")
async def pipeline(settings: Settings, keyring: Keyring, base_url: str) -> AsyncIterator[None]:
    """Dispatcher and worker running in this process against the session stack."""
    from worker.dispatch.dispatcher import Dispatcher
    from worker.main import run_worker

    stop = asyncio.Event()
    dpool = await db.create_pool(settings.database_url, min_size=1, max_size=4)
    tasks = [
        asyncio.create_task(Dispatcher(dpool, settings).run(stop)),
        asyncio.create_task(run_worker(settings, keyring, stop)),
    ]
    await asyncio.sleep(0.5)
    for task in tasks:
        if task.done():
            task.result()  # surface a start-up failure here rather than as a timeout later
    yield
    stop.set()
    await asyncio.gather(*tasks, return_exceptions=True)
    await dpool.close()


async def wait_for(predicate, timeout: float = 20.0, interval: float = 0.1):  # type: ignore[no-untyped-def]
    """Poll an async predicate until it returns something truthy."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        value = await predicate()
        if value:
            return value
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"condition not met within {timeout}s (last value: {value!r})")
        await asyncio.sleep(interval)
