"""`POST /ingest/pubsub/gmail`: Gmail change notifications pushed by Google Pub/Sub.

Pub/Sub treats 102/200/201/202/204 as an ack and anything else as a nack, redelivering until
the message expires. So: a bad token 401; a body that can never parse 400 (it will keep
failing, but at least visibly); storage down 503 (redelivered later); a mailbox nobody
watches 204 (there is nothing to do, and a nack would make Pub/Sub retry for a week).

An accepted push is stored once per watched mailbox with that address, deduplicated on the
Pub/Sub message id (redeliveries keep it); the dispatcher forwards it to the mailbox's sync.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import logging
import time
from dataclasses import dataclass
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response

from ingest.errors import BadRequest, Unauthorized, Unavailable
from ingest.hooks import read_body, storable_id
from ingest.oidc import OidcError, OidcUnavailable
from ingest.state import app_state
from schemas import jsonlimits
from schemas.store.events import NewEvent
from schemas.store.gmail import mailboxes_for_email
from settings import Settings
from triggers.gmail import PUSH_SOURCE_TYPE as PUSH_SOURCE

log = logging.getLogger(__name__)

PUSH_PATH = "/ingest/pubsub/gmail"
# Pushes taken without a token check are counted under their own source label, so a
# deployment that left verification off shows it on every dashboard.
UNVERIFIED_SOURCE = "gmail.push-unverified"


@dataclass(frozen=True, slots=True)
class PushMessage:
    """The parts of a wrapped Pub/Sub push body hookyard uses."""

    message_id: str
    publish_time: str | None
    data: bytes
    subscription: str | None


@dataclass(frozen=True, slots=True)
class GmailNotification:
    """A mailbox changed: its address and its new history id."""

    email_address: str
    history_id: int


class PushFormatError(ValueError):
    """The body is not a wrapped Pub/Sub push carrying a Gmail notification."""


def push_audience(settings: Settings) -> str:
    """The audience tokens must carry: configured, else the push URL (Pub/Sub's own default)."""
    return settings.pubsub_audience or f"{settings.base_url}{PUSH_PATH}"


def announce(settings: Settings) -> None:
    """Log, once at start, how pushes are authenticated; loudly when they are not."""
    if not settings.pubsub_verify:
        log.warning(
            "HOOKYARD_PUBSUB_VERIFY=false: Gmail pushes are accepted WITHOUT checking their OIDC token. "
            "Only for the local Pub/Sub emulator; anyone who can reach %s can inject notifications.",
            PUSH_PATH,
        )
    elif not settings.pubsub_service_account:
        log.info("HOOKYARD_PUBSUB_SERVICE_ACCOUNT is not set: every Gmail push will be refused (401)")


def parse_push(body: bytes, max_depth: int = jsonlimits.DEFAULT_MAX_DEPTH) -> PushMessage:
    """Read a wrapped push body; both `messageId` and `message_id` spellings are accepted.

    A body nested deeper than `max_depth` is refused before it is parsed.
    """
    try:
        envelope = jsonlimits.loads(body, max_depth)
    except jsonlimits.JsonTooDeep as exc:
        raise PushFormatError(f"body is {exc}") from None
    except orjson.JSONDecodeError:
        raise PushFormatError("body is not JSON") from None
    message = envelope.get("message") if isinstance(envelope, dict) else None
    if not isinstance(message, dict):
        raise PushFormatError("body has no 'message' object")
    message_id = message.get("messageId", message.get("message_id"))
    if not isinstance(message_id, str) or not message_id:
        raise PushFormatError("message has no messageId")
    publish_time = message.get("publishTime", message.get("publish_time"))
    data = message.get("data")
    if not isinstance(data, str):
        raise PushFormatError("message has no base64 'data'")
    subscription = envelope.get("subscription")
    for name, value in (("messageId", message_id), ("publishTime", publish_time), ("subscription", subscription)):
        if isinstance(value, str) and (len(value) > 500 or "\x00" in value):
            raise PushFormatError(f"{name} is not a valid Pub/Sub value")
    return PushMessage(
        message_id=message_id,
        publish_time=publish_time if isinstance(publish_time, str) else None,
        data=_b64decode(data),
        subscription=subscription if isinstance(subscription, str) else None,
    )


def parse_notification(data: bytes, max_depth: int = jsonlimits.DEFAULT_MAX_DEPTH) -> GmailNotification:
    """`{"emailAddress": "...", "historyId": "123"}` (the id may come as a string or a number)."""
    try:
        value = jsonlimits.loads(data, max_depth)
    except jsonlimits.JsonTooDeep as exc:
        raise PushFormatError(f"message data is {exc}") from None
    except orjson.JSONDecodeError:
        raise PushFormatError("message data is not JSON") from None
    if not isinstance(value, dict):
        raise PushFormatError("message data is not a JSON object")
    email = value.get("emailAddress")
    if not isinstance(email, str) or "@" not in email or len(email) > 320:
        raise PushFormatError("message data has no emailAddress")
    history = value.get("historyId")
    if isinstance(history, str) and history.isdigit() and len(history) <= 19:
        history = int(history)
    if isinstance(history, bool) or not isinstance(history, int) or not 0 < history < 2**63:
        raise PushFormatError("message data has no valid historyId")
    return GmailNotification(email, history)


def _b64decode(data: str) -> bytes:
    # Gmail's guide says base64url, Pub/Sub documents standard base64: accept both, padded or not.
    normalised = data.strip().replace("-", "+").replace("_", "/")
    try:
        return base64.b64decode(normalised + "=" * (-len(normalised) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise PushFormatError("message data is not base64") from None


async def _authenticate(request: Request) -> dict[str, Any]:
    state = app_state(request)
    settings = state.settings
    if not settings.pubsub_verify:
        return {"verified": False, "scheme": "none"}
    verifier = state.oidc
    if verifier is None:
        raise Unavailable("push verification is not ready")
    emails = {settings.pubsub_service_account} if settings.pubsub_service_account else set()
    try:
        claims = await verifier.verify(
            request.headers.get("authorization"), audience=push_audience(settings), emails=emails
        )
    except OidcError as exc:
        meter = state.metrics.source(PUSH_SOURCE)
        meter.rejected.inc()
        meter.verification_failed(exc.reason.replace(" ", "_"))
        log.info("gmail push refused: %s", exc.reason)
        raise Unauthorized(f"push token refused: {exc.reason}", code="oidc_" + exc.reason.replace(" ", "_")) from None
    except OidcUnavailable as exc:
        log.warning("gmail push cannot be verified now: %s", exc)
        raise Unavailable("cannot verify push tokens right now; retry later") from None
    return {"verified": True, "scheme": "google-oidc", "email": claims.get("email")}


async def receive_gmail_push(request: Request) -> Response:
    """Accept one Gmail notification from Pub/Sub."""
    state = app_state(request)
    started = time.monotonic()
    verification = await _authenticate(request)
    meter = state.metrics.source(PUSH_SOURCE if verification["verified"] else UNVERIFIED_SOURCE)
    body = await read_body(request, state.settings.max_body_bytes, state.settings.body_read_timeout_s)
    try:
        push = parse_push(body, state.settings.max_json_depth)
        notification = parse_notification(push.data, state.settings.max_json_depth)
    except PushFormatError as exc:
        meter.rejected.inc()
        raise BadRequest(str(exc), code="bad_push") from None
    async with state.pool.acquire() as conn:
        mailboxes = await mailboxes_for_email(conn, notification.email_address)
    if not mailboxes:
        log.info("gmail push for a mailbox nobody watches (message %s); acknowledged", push.message_id)
        return Response(status_code=204)
    dedup_key = storable_id(push.message_id) or push.message_id
    payload = orjson.dumps({"emailAddress": notification.email_address, "historyId": notification.history_id})
    verification |= {"message_id": push.message_id, "publish_time": push.publish_time}
    if push.subscription:
        verification["subscription"] = push.subscription
    # One event per mailbox: several owners may have connected the same address.
    stored = await asyncio.gather(
        *(
            state.inbox.store(
                NewEvent(
                    owner_id=mailbox.owner_id,
                    source_type=PUSH_SOURCE,
                    source_id=str(mailbox.credential_id),
                    dedup_key=dedup_key,
                    headers={},
                    body=payload,
                    verification=verification,
                )
            )
            for mailbox in mailboxes
        )
    )
    (meter.duplicate if all(s.duplicate for s in stored) else meter.accepted).inc()
    meter.latency.observe(time.monotonic() - started)
    return Response(status_code=204)
