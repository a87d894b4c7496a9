"""A TCP proxy in front of PostgreSQL that injects the faults a network and a database have.

- a share of new connections is reset at once (RST, before any byte);
- `cut_one()` aborts one live connection (both sides), as a dropped link or a killed backend;
- `blackout(s)` aborts every live connection and resets new ones for `s` seconds.

Loopback only; used by bench/chaos.py between `hookyard dev`'s apps and its PostgreSQL.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import socket
import struct
import time
from collections.abc import Callable

_CHUNK = 65536


def reset(writer: asyncio.StreamWriter) -> None:
    """Close with an RST (SO_LINGER 0), as a crashed peer or a middlebox does."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


class FaultProxy:
    """Listens on 127.0.0.1:`port` and forwards to 127.0.0.1:`upstream_port`."""

    def __init__(
        self,
        port: int,
        upstream_port: int,
        rng: random.Random,
        *,
        reset_share: float = 0.0,
        on_fault: Callable[[str], None] = lambda _: None,
    ) -> None:
        self.port = port
        self.upstream_port = upstream_port
        self.rng = rng
        self.reset_share = reset_share
        self.on_fault = on_fault
        self.live: set[tuple[asyncio.StreamWriter, asyncio.StreamWriter]] = set()
        self.blackout_until = 0.0
        self.counts = {"connections": 0, "reset_at_connect": 0, "cut": 0, "refused_in_blackout": 0}
        self._server: asyncio.base_events.Server | None = None

    async def start(self) -> None:
        """Start listening."""
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", self.port, backlog=512)

    async def close(self) -> None:
        """Stop listening and drop every connection."""
        if self._server is not None:
            self._server.close()
        for client, upstream in list(self.live):
            client.transport.abort()
            upstream.transport.abort()

    def cut_one(self) -> bool:
        """Abort one live connection, chosen at random; False when there is none."""
        if not self.live:
            return False
        client, upstream = self.rng.choice(sorted(self.live, key=id))
        reset(client)
        upstream.transport.abort()
        self.counts["cut"] += 1
        return True

    def blackout(self, seconds: float) -> int:
        """Drop every live connection and refuse new ones for `seconds`; returns how many were dropped."""
        self.blackout_until = time.monotonic() + seconds
        dropped = 0
        for client, upstream in list(self.live):
            reset(client)
            upstream.transport.abort()
            dropped += 1
        return dropped

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.counts["connections"] += 1
        if time.monotonic() < self.blackout_until:
            self.counts["refused_in_blackout"] += 1
            reset(writer)
            return
        if self.reset_share and self.rng.random() < self.reset_share:
            self.counts["reset_at_connect"] += 1
            self.on_fault("pg proxy: new connection reset")
            reset(writer)
            return
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        except OSError:
            reset(writer)  # PostgreSQL is down: the client sees what it would see without us
            return
        pair = (writer, up_writer)
        self.live.add(pair)
        try:
            await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))
        finally:
            self.live.discard(pair)
            writer.transport.abort()
            up_writer.transport.abort()


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while chunk := await reader.read(_CHUNK):
            writer.write(chunk)
            await writer.drain()
    except (OSError, asyncio.IncompleteReadError):
        pass
    finally:
        writer.transport.abort()
