"""Entry points for each production process: serve, dispatch, worker."""

from __future__ import annotations

import asyncio
import base64
import logging
import signal
from collections.abc import Callable
from functools import partial
from types import FrameType

import uvicorn
from prometheus_client import disable_created_metrics

from ingest.app import create_app
from oauth.crypto import Keyring, generate_key
from schemas import db
from settings import Settings, require_master_keys
from telemetry.metrics import Metrics, install_temporal_runtime, serve_metrics
from telemetry.tracing import Tracing, setup_tracing
from worker.dispatch.dispatcher import Dispatcher
from worker.main import run_worker

log = logging.getLogger(__name__)


def keyring_from(settings: Settings) -> Keyring:
    """The master keyring; `MasterKeysMissing` without keys (secrets would be unreadable later)."""
    return Keyring(require_master_keys(settings))


def stop_event() -> asyncio.Event:
    """An event set by SIGINT or SIGTERM (call inside the running loop)."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    return stop


def telemetry(settings: Settings, process: str) -> tuple[Metrics, Tracing, Callable[[], None]]:
    """This process's metrics and tracing, and a function that stops them (flushing spans).

    The api serves its metrics at `/metrics`; dispatcher and worker on HOOKYARD_METRICS_PORT, and
    the Temporal SDK's own on HOOKYARD_TEMPORAL_METRICS_PORT (both 0 = off).
    """
    # `*_created` samples would double the series count and no panel or alert reads them.
    disable_created_metrics()  # type: ignore[no-untyped-call]
    metrics = Metrics(process_collectors=True)
    tracing = setup_tracing(settings.otel_endpoint, f"hookyard-{process}")
    stop_listener = None
    if process != "api":
        stop_listener = serve_metrics(metrics, settings.metrics_host, settings.metrics_port)
        # Before any Temporal client exists: clients take the default runtime when created.
        install_temporal_runtime(settings.metrics_host, settings.temporal_metrics_port)

    def close() -> None:
        if stop_listener is not None:
            stop_listener()
        tracing.shutdown()

    return metrics, tracing, close


def serve(settings: Settings) -> None:
    """The API and ingest server; uvicorn drains in-flight requests on SIGTERM."""
    metrics, tracing, close_telemetry = telemetry(settings, "api")
    app = create_app(settings, keyring_from(settings), metrics, tracing)
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        lifespan="on",
        log_config=None,
        timeout_graceful_shutdown=30,
        backlog=2048,
    )
    server = uvicorn.Server(config)
    # After draining, uvicorn restores the previous handlers and raises the signal again; the
    # defaults would then kill the process (exit -15) or raise KeyboardInterrupt before telemetry
    # is flushed. So, like dispatch and worker, a drained stop exits 0; one before serving began
    # stops at once.
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, partial(_after_drain, server))
    try:
        server.run()
    finally:
        close_telemetry()


def _after_drain(server: uvicorn.Server, signum: int, frame: FrameType | None) -> None:
    """Outside uvicorn's own handlers: a stop signal after the drain is done with, before it exits."""
    if not server.should_exit:
        raise SystemExit(0)


def dispatch(settings: Settings) -> None:
    """The dispatcher loop."""
    # Signals to Temporal are encrypted with keys derived from the master keys: fail at start,
    # not on every hand-over.
    keyring_from(settings)
    metrics, tracing, close_telemetry = telemetry(settings, "dispatcher")

    async def main() -> None:
        stop = stop_event()
        pool = await db.wait_for_pool(settings.database_url, stop, min_size=1, max_size=4)
        if pool is None:
            return
        try:
            log.info("dispatcher running")
            await Dispatcher(pool, settings, metrics=metrics, tracing=tracing).run(stop)
        finally:
            await pool.close()

    try:
        asyncio.run(main())
    finally:
        close_telemetry()


def worker(settings: Settings) -> None:
    """The Temporal worker."""
    keyring = keyring_from(settings)
    metrics, tracing, close_telemetry = telemetry(settings, "worker")

    async def main() -> None:
        await run_worker(settings, keyring, stop_event(), metrics, tracing)

    try:
        asyncio.run(main())
    finally:
        close_telemetry()


def new_master_key_line(key_id: str) -> str:
    """A `kid:base64` entry for HOOKYARD_MASTER_KEYS."""
    return f"{key_id}:{base64.b64encode(generate_key()).decode()}"
