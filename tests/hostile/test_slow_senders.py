"""Senders that leave mid-body or trickle it: answered (or dropped) quietly, never an unhandled error."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import AsyncIterator

import httpx
import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families

from oauth.crypto import Keyring
from tests.conftest import Owner, Stack, make_settings, serve

pytestmark = pytest.mark.integration

REJECTED = ("hookyard_events_received_total", frozenset({"source": "webhook", "outcome": "rejected"}.items()))


@pytest.fixture(scope="module")
async def impatient_api(stack: Stack, keyring: Keyring) -> AsyncIterator[tuple[str, int]]:
    """An api whose body-read timeout is short enough to test."""
    from ingest.app import create_app

    settings = make_settings(stack, body_read_timeout_s=0.5)
    async with serve(create_app(settings, keyring), settings.port) as url:
        yield url, settings.port


async def _rejected(url: str) -> float:
    async with httpx.AsyncClient(base_url=url) as http:
        text = (await http.get("/metrics")).text
    samples = {
        (s.name, frozenset(s.labels.items())): s.value for f in text_string_to_metric_families(text) for s in f.samples
    }
    return samples.get(REJECTED, 0.0)


def _head(path: str, length: int) -> bytes:
    lines = [f"POST {path} HTTP/1.1", "host: x", "content-type: application/json", f"content-length: {length}"]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


async def _answer(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    """Status and body of one HTTP/1.1 response (the connection may stay open)."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    length = next(int(line.split(":")[1]) for line in lines if line.lower().startswith("content-length:"))
    return int(lines[0].split()[1]), await reader.readexactly(length)


async def test_a_sender_that_disconnects_mid_body_is_neither_an_error_nor_a_rejection(
    impatient_api: tuple[str, int], caplog: pytest.LogCaptureFixture
) -> None:
    url, port = impatient_api
    before = await _rejected(url)
    caplog.set_level(logging.INFO)
    _, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(_head(f"/hooks/{uuid.uuid4()}", 1000) + b'{"partial": ')
    await writer.drain()
    await asyncio.sleep(0.1)
    writer.close()
    await asyncio.sleep(0.3)
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], [r.getMessage() for r in caplog.records]
    assert await _rejected(url) == before


async def _trickle(port: int, head: bytes) -> tuple[int, bytes, float]:
    """Send `head`, then one body byte every 0.1 s (10 s in all) until the server answers."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(head)
    started = time.monotonic()

    async def drip() -> None:
        with contextlib.suppress(ConnectionError):
            for _ in range(100):
                writer.write(b" ")
                await writer.drain()
                await asyncio.sleep(0.1)

    dripping = asyncio.create_task(drip())
    try:
        status, body = await asyncio.wait_for(_answer(reader), 8)
        return status, body, time.monotonic() - started
    finally:
        dripping.cancel()
        writer.close()


async def test_a_webhook_body_that_trickles_in_past_the_timeout_gets_408(impatient_api: tuple[str, int]) -> None:
    status, body, waited = await _trickle(impatient_api[1], _head(f"/hooks/{uuid.uuid4()}", 1000))
    assert status == 408, body
    assert orjson.loads(body)["error"]["code"] == "request_timeout"
    assert waited < 3


async def test_an_api_body_that_trickles_in_past_the_timeout_gets_408(
    impatient_api: tuple[str, int], owner: Owner
) -> None:
    head = _head("/api/workflows", 1000).replace(
        b"\r\n\r\n", f"\r\nauthorization: Bearer {owner.key}\r\n\r\n".encode(), 1
    )
    status, body, _ = await _trickle(impatient_api[1], head)
    assert status == 408, body
