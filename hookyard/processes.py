"""Entry points for each production process: serve, dispatch, worker."""

from __future__ import annotations

import asyncio
import logging
import signal

import uvicorn

from hookyard.settings import Settings
from oauth.crypto import Keyring, generate_key

log = logging.getLogger(__name__)


def keyring_from(settings: Settings) -> Keyring:
    """The master keyring; refuses to start without keys (secrets would be unreadable later)."""
    if not settings.master_keys:
        raise SystemExit(
            "HOOKYARD_MASTER_KEYS is not set. Generate a key with `hookyard keys generate` and set "
            "HOOKYARD_MASTER_KEYS=<id>:<base64 key> (or HOOKYARD_MASTER_KEYS_FILE)."
        )
    return Keyring(settings.master_keys)


def stop_event() -> asyncio.Event:
    """An event set by SIGINT or SIGTERM (call inside the running loop)."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    return stop


def serve(settings: Settings) -> None:
    """The API and ingest server; uvicorn drains in-flight requests on SIGTERM."""
    from ingest.app import create_app

    app = create_app(settings, keyring_from(settings))
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        lifespan="on",
        log_config=None,
        timeout_graceful_shutdown=30,
        backlog=2048,
    )
    uvicorn.Server(config).run()


def dispatch(settings: Settings) -> None:
    """The dispatcher loop."""
    from schemas import db
    from worker.dispatcher import Dispatcher

    async def main() -> None:
        stop = stop_event()
        pool = await db.create_pool(settings.database_url, min_size=1, max_size=4)
        try:
            log.info("dispatcher running")
            await Dispatcher(pool, settings).run(stop)
        finally:
            await pool.close()

    asyncio.run(main())


def worker(settings: Settings) -> None:
    """The Temporal worker."""
    from worker.main import run_worker

    keyring = keyring_from(settings)

    async def main() -> None:
        await run_worker(settings, keyring, stop_event())

    asyncio.run(main())


def new_master_key_line(key_id: str) -> str:
    """A `kid:base64` entry for HOOKYARD_MASTER_KEYS."""
    import base64

    return f"{key_id}:{base64.b64encode(generate_key()).decode()}"
