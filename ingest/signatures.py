"""Verify inbound webhook signatures against the raw request body.

Five schemes: Standard Webhooks (also under its Svix header names), GitHub, Stripe, Slack and
Shopify. Everything here is pure: no I/O and no clock, because callers pass ``now``. Each
``verify`` takes several secrets so one can be rotated: the current secret first, older ones
after it. ``Verified.secret_index`` says which one matched.

Every rejection raises a subclass of ``SignatureError``::

    SignatureError                 .reason
     ├── MissingHeader             "missing_header"    a required header is absent or empty
     ├── MalformedHeader           "malformed_header"  a header cannot be parsed
     ├── StaleTimestamp            "stale_timestamp"   signed time outside +/- tolerance
     └── BadSignature              "bad_signature"     no signature matched any secret

Checks run in that order, so a request with several faults reports the first. Messages never
contain a secret, an expected signature or a header value.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import math
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from secrets import token_bytes
from types import MappingProxyType
from typing import Protocol

import orjson

DEFAULT_SCHEME = "standard-webhooks"
_WHSEC_PREFIX = "whsec_"
# Twelve digits reach the year 33658; anything longer is not a timestamp a sender meant.
_MAX_TIMESTAMP_DIGITS = 12


class SignatureError(Exception):
    """The request was rejected. ``reason`` is a stable machine code; ``str()`` is for people."""

    reason: str = "signature_error"


class MissingHeader(SignatureError):
    reason = "missing_header"

    def __init__(self, header: str) -> None:
        super().__init__(f"missing required header {header!r}")
        self.header = header


class MalformedHeader(SignatureError):
    reason = "malformed_header"


class StaleTimestamp(SignatureError):
    reason = "stale_timestamp"


class BadSignature(SignatureError):
    reason = "bad_signature"


@dataclass(frozen=True, slots=True)
class Verified:
    """A request whose signature matched ``secrets[secret_index]``."""

    scheme: str
    secret_index: int
    timestamp: int | None


class Scheme(Protocol):
    name: str

    def verify(
        self,
        body: bytes,
        headers: Mapping[str, str],
        secrets: Sequence[str],
        now: float,
        tolerance: int = 300,
    ) -> Verified:
        """Verify raw ``body`` against lowercase ``headers``; raise a SignatureError if not."""
        ...

    def delivery_id(self, body: bytes, headers: Mapping[str, str]) -> str | None:
        """The sender's id for this delivery, to dedupe retries; None if it sends none."""
        ...

    def sign(
        self, body: bytes, secret: str, *, now: float, msg_id: str | None = None
    ) -> dict[str, str]:
        """The headers a correct sender would send with ``body``."""
        ...


def _hmac(key: bytes, content: bytes) -> bytes:
    return hmac.new(key, content, hashlib.sha256).digest()


def _require(headers: Mapping[str, str], name: str) -> str:
    value = headers.get(name)
    if not value:
        raise MissingHeader(name)
    return value


def _b64decode(value: str) -> bytes:
    return base64.b64decode(value, validate=True)


def _decode(value: str, decoder: Callable[[str], bytes], header: str) -> bytes:
    try:
        return decoder(value)
    except ValueError as exc:
        raise MalformedHeader(f"{header} holds a signature that does not decode") from exc


def _timestamp(raw: str, header: str) -> int:
    # int() alone would also take " 12", "1_2", "+12" and non-ASCII digits.
    if not (raw.isascii() and raw.isdigit() and len(raw) <= _MAX_TIMESTAMP_DIGITS):
        raise MalformedHeader(f"{header} is not a unix timestamp in whole seconds")
    return int(raw)


def _check_fresh(timestamp: int, now: float, tolerance: int) -> None:
    skew = now - timestamp
    if abs(skew) > tolerance:
        where = "in the past" if skew > 0 else "in the future"
        raise StaleTimestamp(
            f"signed timestamp is {abs(skew):.0f}s {where}; tolerance {tolerance}s"
        )


def _match(scheme: str, candidates: list[bytes], keys: list[bytes | None], content: bytes) -> int:
    for index, key in enumerate(keys):
        if key is None:
            continue
        expected = _hmac(key, content)
        # A list, not a generator: compare every candidate so timing hides which one matched.
        if any([hmac.compare_digest(expected, candidate) for candidate in candidates]):
            return index
    raise BadSignature(f"{scheme}: no signature matched any of {len(keys)} configured secret(s)")


def _json_string(body: bytes, field: str) -> str | None:
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    value = document.get(field) if isinstance(document, dict) else None
    return value if isinstance(value, str) and value else None


def _whsec_key(secret: str) -> bytes:
    raw = secret.removeprefix(_WHSEC_PREFIX)
    try:
        # Secrets are often shared without base64 padding; restore it rather than reject them.
        key = base64.b64decode(raw + "=" * (-len(raw) % 4), validate=True)
    except ValueError as exc:
        raise ValueError("standard-webhooks secret is not base64 after 'whsec_'") from exc
    if not key:
        raise ValueError("standard-webhooks secret is empty")
    return key


# Signature candidates, the exact bytes that were signed, and the signed timestamp if any.
_Parsed = tuple[list[bytes], bytes, int | None]


class _HmacScheme:
    """Shared order of checks: headers present and parseable, timestamp fresh, signature."""

    name: str

    def verify(
        self,
        body: bytes,
        headers: Mapping[str, str],
        secrets: Sequence[str],
        now: float,
        tolerance: int = 300,
    ) -> Verified:
        candidates, content, timestamp = self._parse(body, headers)
        if timestamp is not None:
            _check_fresh(timestamp, now, tolerance)
        keys = [self._key(secret) for secret in secrets]
        return Verified(self.name, _match(self.name, candidates, keys, content), timestamp)

    def _key(self, secret: str) -> bytes | None:
        return secret.encode()

    def _parse(self, body: bytes, headers: Mapping[str, str]) -> _Parsed:
        raise NotImplementedError


class _StandardWebhooks(_HmacScheme):
    """``webhook-signature: v1,<base64> ...`` over ``"{id}.{timestamp}.{body}"``."""

    name = "standard-webhooks"

    def _parse(self, body: bytes, headers: Mapping[str, str]) -> _Parsed:
        # Svix (and Resend through it) signs identically under svix-* names.
        prefix = (
            "webhook" if _has_any(headers, "webhook") or not _has_any(headers, "svix") else "svix"
        )
        msg_id = _require(headers, f"{prefix}-id")
        raw_timestamp = _require(headers, f"{prefix}-timestamp")
        signatures = _require(headers, f"{prefix}-signature")
        timestamp = _timestamp(raw_timestamp, f"{prefix}-timestamp")
        candidates = _standard_signatures(signatures, f"{prefix}-signature")
        try:
            content = f"{msg_id}.{raw_timestamp}.".encode() + body
        except UnicodeEncodeError as exc:
            raise MalformedHeader(f"{prefix}-id is not valid text") from exc
        return candidates, content, timestamp

    def _key(self, secret: str) -> bytes | None:
        # A secret that cannot be decoded can never have signed anything.
        try:
            return _whsec_key(secret)
        except ValueError:
            return None

    def delivery_id(self, body: bytes, headers: Mapping[str, str]) -> str | None:
        return headers.get("webhook-id") or headers.get("svix-id") or None

    def sign(
        self, body: bytes, secret: str, *, now: float, msg_id: str | None = None
    ) -> dict[str, str]:
        msg_id = msg_id or f"msg_{uuid.uuid4().hex}"
        timestamp = str(math.floor(now))
        digest = _hmac(_whsec_key(secret), f"{msg_id}.{timestamp}.".encode() + body)
        signature = f"v1,{base64.b64encode(digest).decode()}"
        return {
            "webhook-id": msg_id,
            "webhook-timestamp": timestamp,
            "webhook-signature": signature,
        }


def _has_any(headers: Mapping[str, str], prefix: str) -> bool:
    return any(f"{prefix}-{part}" in headers for part in ("id", "timestamp", "signature"))


def _standard_signatures(value: str, header: str) -> list[bytes]:
    signatures = []
    for entry in value.split():
        version, comma, signature = entry.partition(",")
        if not comma:
            raise MalformedHeader(f"{header} entries must look like 'v1,<base64>'")
        # v1a (ed25519) and later versions are for other verifiers; skip, do not fail.
        if version == "v1":
            signatures.append(_decode(signature, _b64decode, header))
    return signatures


class _GitHub(_HmacScheme):
    """``x-hub-signature-256: sha256=<hex>`` over the body. No timestamp: dedupe stops replays."""

    name = "github"

    def _parse(self, body: bytes, headers: Mapping[str, str]) -> _Parsed:
        algorithm, equals, signature = _require(headers, "x-hub-signature-256").partition("=")
        if algorithm != "sha256" or not equals:
            raise MalformedHeader("x-hub-signature-256 must look like 'sha256=<hex>'")
        return [_decode(signature, binascii.unhexlify, "x-hub-signature-256")], body, None

    def delivery_id(self, body: bytes, headers: Mapping[str, str]) -> str | None:
        return headers.get("x-github-delivery") or None

    def sign(
        self, body: bytes, secret: str, *, now: float, msg_id: str | None = None
    ) -> dict[str, str]:
        return {
            "x-hub-signature-256": f"sha256={_hmac(secret.encode(), body).hex()}",
            "x-github-delivery": msg_id or str(uuid.uuid4()),
        }


class _Stripe(_HmacScheme):
    """``stripe-signature: t=<unix>,v1=<hex>...`` over ``"{t}.{body}"``.

    The key is the whole ``whsec_...`` string as UTF-8; Stripe does not base64-decode it.
    """

    name = "stripe"

    def _parse(self, body: bytes, headers: Mapping[str, str]) -> _Parsed:
        raw_timestamp: str | None = None
        candidates = []
        for item in _require(headers, "stripe-signature").split(","):
            key, equals, value = item.partition("=")
            if not equals or (key == "t" and raw_timestamp is not None):
                raise MalformedHeader("stripe-signature must look like 't=<unix>,v1=<hex>'")
            if key == "t":
                raw_timestamp = value
            elif key == "v1":  # v0 is test-mode legacy; other keys belong to future schemes
                candidates.append(_decode(value, binascii.unhexlify, "stripe-signature"))
        if raw_timestamp is None:
            raise MalformedHeader("stripe-signature has no t= timestamp")
        timestamp = _timestamp(raw_timestamp, "stripe-signature t=")
        return candidates, f"{raw_timestamp}.".encode() + body, timestamp

    def delivery_id(self, body: bytes, headers: Mapping[str, str]) -> str | None:
        return _json_string(body, "id")

    def sign(
        self, body: bytes, secret: str, *, now: float, msg_id: str | None = None
    ) -> dict[str, str]:
        timestamp = math.floor(now)
        digest = _hmac(secret.encode(), f"{timestamp}.".encode() + body)
        return {"stripe-signature": f"t={timestamp},v1={digest.hex()}"}


class _Slack(_HmacScheme):
    """``x-slack-signature: v0=<hex>`` over ``"v0:{x-slack-request-timestamp}:{body}"``."""

    name = "slack"

    def _parse(self, body: bytes, headers: Mapping[str, str]) -> _Parsed:
        signature_header = _require(headers, "x-slack-signature")
        raw_timestamp = _require(headers, "x-slack-request-timestamp")
        version, equals, signature = signature_header.partition("=")
        if version != "v0" or not equals:
            raise MalformedHeader("x-slack-signature must look like 'v0=<hex>'")
        candidate = _decode(signature, binascii.unhexlify, "x-slack-signature")
        timestamp = _timestamp(raw_timestamp, "x-slack-request-timestamp")
        return [candidate], f"v0:{raw_timestamp}:".encode() + body, timestamp

    def delivery_id(self, body: bytes, headers: Mapping[str, str]) -> str | None:
        return _json_string(body, "event_id")

    def sign(
        self, body: bytes, secret: str, *, now: float, msg_id: str | None = None
    ) -> dict[str, str]:
        timestamp = str(math.floor(now))
        digest = _hmac(secret.encode(), f"v0:{timestamp}:".encode() + body)
        return {"x-slack-request-timestamp": timestamp, "x-slack-signature": f"v0={digest.hex()}"}


class _Shopify(_HmacScheme):
    """``x-shopify-hmac-sha256: <base64>`` (not hex) over the body. No timestamp."""

    name = "shopify"

    def _parse(self, body: bytes, headers: Mapping[str, str]) -> _Parsed:
        signature = _require(headers, "x-shopify-hmac-sha256")
        return [_decode(signature, _b64decode, "x-shopify-hmac-sha256")], body, None

    def delivery_id(self, body: bytes, headers: Mapping[str, str]) -> str | None:
        return headers.get("x-shopify-webhook-id") or headers.get("x-shopify-event-id") or None

    def sign(
        self, body: bytes, secret: str, *, now: float, msg_id: str | None = None
    ) -> dict[str, str]:
        digest = _hmac(secret.encode(), body)
        return {
            "x-shopify-hmac-sha256": base64.b64encode(digest).decode(),
            "x-shopify-webhook-id": msg_id or str(uuid.uuid4()),
        }


_ALL: tuple[Scheme, ...] = (_StandardWebhooks(), _GitHub(), _Stripe(), _Slack(), _Shopify())
SCHEMES: Mapping[str, Scheme] = MappingProxyType({scheme.name: scheme for scheme in _ALL})


def get_scheme(name: str) -> Scheme:
    """The scheme called ``name``; ValueError if there is none."""
    if name not in SCHEMES:
        known = ", ".join(sorted(SCHEMES))
        raise ValueError(f"unknown signature scheme {name!r}; expected one of: {known}")
    return SCHEMES[name]


def generate_secret() -> str:
    """A new standard-webhooks secret: ``whsec_`` + base64 of 32 random bytes."""
    return _WHSEC_PREFIX + base64.b64encode(token_bytes(32)).decode()
