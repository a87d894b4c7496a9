"""A TCP proxy in front of PostgreSQL that tests can cut and black out, like a flaky network."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from urllib.parse import urlsplit, urlunsplit

from hookyard import services


class FaultProxy:
    """Forwards 127.0.0.1:port to an upstream server; `cut` severs every live connection and
    `blackout` also refuses new ones, as a crashed or unreachable server would."""

    def __init__(self, upstream_host: str, upstream_port: int) -> None:
        self.upstream = (upstream_host, upstream_port)
        self.port = services.free_port()
        self.refusing = False
        self.cuts = 0
        self._live: set[asyncio.StreamWriter] = set()
        self._server: asyncio.Server | None = None
        self._timers: set[asyncio.Task[None]] = set()

    def url_for(self, database_url: str) -> str:
        """The same database URL, pointed at the proxy."""
        parts = urlsplit(database_url)
        netloc = f"{parts.username}@127.0.0.1:{self.port}" if parts.username else f"127.0.0.1:{self.port}"
        return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", self.port)

    async def close(self) -> None:
        for timer in self._timers:
            timer.cancel()
        self.cut()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    def cut(self) -> None:
        """Reset every connection that goes through the proxy now."""
        self.cuts += 1
        for writer in list(self._live):
            _abort(writer)
        self._live.clear()

    def blackout(self, seconds: float) -> None:
        """Cut every connection and refuse new ones for `seconds`."""
        self.cut()
        self.refusing = True
        timer = asyncio.get_running_loop().create_task(self._restore_after(seconds))
        self._timers.add(timer)
        timer.add_done_callback(self._timers.discard)

    async def _restore_after(self, seconds: float) -> None:
        await asyncio.sleep(seconds)
        self.refusing = False

    async def _accept(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        if self.refusing:
            _abort(client_writer)
            return
        try:
            server_reader, server_writer = await asyncio.open_connection(*self.upstream)
        except OSError:
            _abort(client_writer)
            return
        self._live.update((client_writer, server_writer))
        pipes = [
            asyncio.create_task(_pipe(client_reader, server_writer)),
            asyncio.create_task(_pipe(server_reader, client_writer)),
        ]
        await asyncio.wait(pipes, return_when=asyncio.FIRST_COMPLETED)
        for pipe in pipes:
            pipe.cancel()
        for writer in (client_writer, server_writer):
            self._live.discard(writer)
            _abort(writer)


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(OSError, asyncio.IncompleteReadError):
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()


def _abort(writer: asyncio.StreamWriter) -> None:
    # A reset, not an orderly close: what a crashed server or a dropped route looks like.
    with contextlib.suppress(Exception):
        writer.transport.abort()


@contextlib.asynccontextmanager
async def fault_proxy(database_url: str) -> AsyncIterator[FaultProxy]:
    """A running proxy in front of the server of `database_url`."""
    parts = urlsplit(database_url)
    proxy = FaultProxy(parts.hostname or "127.0.0.1", parts.port or 5432)
    await proxy.start()
    try:
        yield proxy
    finally:
        await proxy.close()
