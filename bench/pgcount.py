"""A TCP proxy in front of PostgreSQL that counts round trips, one listener per hookyard process.

A round trip is a client message the client then waits on: `Sync` (the end of an extended-
protocol query: what asyncpg sends for every statement, and for BEGIN and COMMIT) or a simple
`Query`. Bytes are forwarded untouched; the counter only reads message headers. Used by
bench/cost.py to report PostgreSQL round trips per event for each process.
"""

from __future__ import annotations

import asyncio
import contextlib
import struct
from collections import Counter

_CHUNK = 65536
_ROUND_TRIP_TYPES = {ord("S"), ord("Q")}


class RoundTripCounter:
    """Parses the client -> server stream into messages and counts the round trips in it."""

    def __init__(self) -> None:
        self.count = 0
        self._buffer = b""
        self._started = False

    def feed(self, data: bytes) -> None:
        """Account for `data`, the next bytes the client sent."""
        buf = self._buffer + data
        pos = 0
        if not self._started:  # the startup message (or SSLRequest): a length, no type byte
            if len(buf) < 4:
                self._buffer = buf
                return
            (length,) = struct.unpack_from("!I", buf, 0)
            if len(buf) < length:
                self._buffer = buf
                return
            pos, self._started = length, length != 8 or buf[4:8] != b"\x04\xd2\x16\x2f"  # SSLRequest: again
        while len(buf) - pos >= 5:
            kind = buf[pos]
            (length,) = struct.unpack_from("!I", buf, pos + 1)
            if len(buf) - pos < 1 + length:
                break
            if kind in _ROUND_TRIP_TYPES:
                self.count += 1
            pos += 1 + length
        self._buffer = buf[pos:]


class CountingProxy:
    """Listeners on 127.0.0.1 forwarding to PostgreSQL; `counts` is round trips per listener name."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.counts: Counter[str] = Counter()
        self._servers: list[asyncio.Server] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self._pipes: set[asyncio.Task[None]] = set()

    async def listen(self, name: str) -> int:
        """A new listener whose round trips count as `name`; returns its port."""

        async def on_client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            task = asyncio.current_task()
            assert task is not None
            self._tasks.add(task)
            try:
                await self._relay(name, reader, writer)
            finally:
                self._tasks.discard(task)

        server = await asyncio.start_server(on_client, "127.0.0.1", 0)
        self._servers.append(server)
        port: int = server.sockets[0].getsockname()[1]
        return port

    async def _relay(self, name: str, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        except OSError:
            writer.close()
            return
        counter = RoundTripCounter()

        async def client_to_server() -> None:
            while data := await reader.read(_CHUNK):
                before = counter.count
                counter.feed(data)
                self.counts[name] += counter.count - before
                up_writer.write(data)
                await up_writer.drain()

        async def server_to_client() -> None:
            while data := await up_reader.read(_CHUNK):
                writer.write(data)
                await writer.drain()

        pipes = [asyncio.create_task(client_to_server()), asyncio.create_task(server_to_client())]
        self._pipes.update(pipes)
        try:
            with contextlib.suppress(OSError):
                await asyncio.wait(pipes, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for pipe in pipes:
                pipe.cancel()
            await asyncio.gather(*pipes, return_exceptions=True)
            self._pipes.difference_update(pipes)
            for w in (writer, up_writer):
                w.close()

    async def close(self) -> None:
        """Stop listening and drop every relayed connection."""
        for server in self._servers:
            server.close()
        # Ending the pipes ends each relay normally (a cancelled connection task would be
        # reported by asyncio's stream machinery).
        for pipe in list(self._pipes):
            pipe.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
