"""`POST /hooks/{endpoint_id}`: verify, deduplicate, store durably, answer. Never waits on Temporal."""

from __future__ import annotations

import asyncio
import hashlib
import time
from uuid import UUID

import orjson
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response

from ingest.deadlines import BodyDeadlines, BodyTimeout
from ingest.errors import ClientGone, NotFound, PayloadTooLarge, RequestTimeout, Unauthorized
from ingest.signatures import SignatureError, get_scheme
from ingest.state import AppState, app_state
from schemas.store.events import NewEvent, Stored

# Not worth keeping, or not safe to keep, once the request is verified.
_DROPPED_HEADERS = frozenset(
    {
        "authorization",
        "cookie",
        "proxy-authorization",
        "x-api-key",
        "host",
        "content-length",
        "connection",
        "webhook-signature",
        "svix-signature",
        "x-hub-signature",
        "x-hub-signature-256",
        "stripe-signature",
        "x-slack-signature",
        "x-shopify-hmac-sha256",
    }
)
_MAX_HEADER_BYTES = 16 * 1024


async def read_body(request: Request, limit: int, timeout_s: float, deadlines: BodyDeadlines | None = None) -> bytes:
    """The raw body, refusing more than `limit` bytes without reading it all, and a body that
    takes longer than `timeout_s` to arrive (a slow sender must not hold a connection).

    With `deadlines` the timeout is kept by its shared sweeper (no loop timer per request),
    else by `asyncio.timeout`.
    """
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(f"body is larger than the {limit} byte limit")
    if deadlines is None:
        try:
            async with asyncio.timeout(timeout_s):
                return await _read_chunks(request, limit)
        except TimeoutError:
            raise RequestTimeout(f"the body did not arrive within {timeout_s:g} s") from None
    task = deadlines.watch(timeout_s)
    try:
        body = await _read_chunks(request, limit)
    except BaseException as exc:
        try:
            deadlines.done(task, exc)
        except BodyTimeout:
            raise RequestTimeout(f"the body did not arrive within {timeout_s:g} s") from None
        raise
    deadlines.done(task, None)
    return body


async def _read_chunks(request: Request, limit: int) -> bytes:
    chunks: list[bytes] = []
    size = 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise PayloadTooLarge(f"body is larger than the {limit} byte limit")
            chunks.append(chunk)
    except ClientDisconnect:
        raise ClientGone("the client closed the connection before sending the whole body") from None
    return b"".join(chunks)


def storable_id(delivery_id: str | None) -> str | None:
    """A delivery id as stored: ids taken from bodies may be huge or hold NUL, so those are hashed."""
    if delivery_id is None or (len(delivery_id) <= 200 and "\x00" not in delivery_id):
        return delivery_id
    return "sha256:" + hashlib.sha256(delivery_id.encode("utf-8", "surrogatepass")).hexdigest()


def kept_headers(headers: dict[str, str]) -> dict[str, str]:
    """Headers stored with the event (for filters and inspection), secrets and signatures dropped."""
    kept: dict[str, str] = {}
    size = 0
    for name, value in headers.items():
        if name in _DROPPED_HEADERS:
            continue
        size += len(name) + len(value)
        if size > _MAX_HEADER_BYTES:
            break
        kept[name] = value
    return kept


async def receive_webhook(request: Request) -> Response:
    """Accept one signed webhook delivery, traced, and counted as rejected if refused."""
    state = app_state(request)
    with state.tracing.server_span("POST /hooks/{endpoint_id}", request.headers) as span:
        try:
            response = await _receive_webhook(request, state)
        except ClientGone as exc:
            # Not a refusal: the sender left; it will retry (or not) on its own.
            span.set_status_code(exc.status)
            raise
        except Exception as exc:
            state.metrics.webhook.rejected.inc()
            span.set_status_code(getattr(exc, "status", 500))
            raise
        span.set_status_code(response.status_code)
        return response


async def _receive_webhook(request: Request, state: AppState) -> Response:
    started = time.perf_counter()
    try:
        endpoint_id = UUID(request.path_params["endpoint_id"])
    except ValueError:
        raise NotFound("no such endpoint") from None
    settings = state.settings
    body = await read_body(request, settings.max_body_bytes, settings.body_read_timeout_s, state.body_deadlines)
    auth = await state.endpoints.get(endpoint_id)
    if auth is None:
        raise NotFound("no such endpoint")
    headers = dict(request.headers)
    scheme = get_scheme(auth.scheme)
    try:
        verified = scheme.verify(body, headers, auth.secrets, time.time(), state.settings.signature_tolerance_s)
    except SignatureError as exc:
        state.metrics.webhook.verification_failed(exc.reason)
        raise Unauthorized(str(exc), code=f"signature_{exc.reason}") from None
    delivery_id = storable_id(scheme.delivery_id(body, headers))
    dedup_key = f"id:{delivery_id}" if delivery_id else f"sha256:{hashlib.sha256(body).hexdigest()}"
    if auth.scheme == "slack" and (challenge := _slack_challenge(body)) is not None:
        return JSONResponse({"challenge": challenge})
    stored = await state.inbox.store(
        NewEvent(
            owner_id=auth.owner_id,
            source_type="webhook",
            source_id=str(endpoint_id),
            dedup_key=dedup_key[:500],
            headers=kept_headers(headers),
            body=body,
            verification={
                "verified": True,
                "scheme": auth.scheme,
                "secret": "current" if verified.secret_index == 0 else "previous",
                "signed_at": verified.timestamp,
                "delivery_id": delivery_id,
                **_trace_context(state),
            },
        )
    )
    meter = state.metrics.webhook
    (meter.duplicate if stored.duplicate else meter.accepted).inc()
    meter.latency.observe(time.perf_counter() - started)
    return stored_response(stored)


def stored_response(stored: Stored) -> Response:
    """`{"event_id", "duplicate"}`, 202 (200 for a duplicate), encoded without a JSON encoder:
    the shape is fixed and a UUID needs no escaping (byte-identical to JSONResponse's)."""
    if stored.duplicate:
        return Response(_DUPLICATE % str(stored.event_id).encode(), 200, media_type="application/json")
    return Response(_ACCEPTED % str(stored.event_id).encode(), 202, media_type="application/json")


_ACCEPTED = b'{"event_id":"%s","duplicate":false}'
_DUPLICATE = b'{"event_id":"%s","duplicate":true}'


def _trace_context(state: AppState) -> dict[str, str]:
    """The request span's context, stored so the dispatcher continues this trace."""
    traceparent = state.tracing.traceparent()
    return {"traceparent": traceparent} if traceparent else {}


def _slack_challenge(body: bytes) -> str | None:
    """Slack's one-time URL verification expects the challenge echoed back, not stored."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    if isinstance(data, dict) and data.get("type") == "url_verification":
        challenge = data.get("challenge")
        return challenge if isinstance(challenge, str) else None
    return None
