"""Verify inbound webhook signatures against the raw request body.

Schemes: Standard Webhooks (also under Svix header names), GitHub, Stripe, Slack, Shopify. Pure:
no I/O and no clock (callers pass ``now``). ``verify`` takes several secrets for rotation, the
current one first; ``Verified.secret_index`` says which matched.

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
from functools import partial
from secrets import token_bytes
from types import MappingProxyType
from typing import Protocol

import orjson

DEFAULT_SCHEME = "standard-webhooks"
_WHSEC_PREFIX = "whsec_"


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

    def sign(self, body: bytes, secret: str, *, now: float, msg_id: str | None = None) -> dict[str, str]:
        """The headers a correct sender would send with ``body``."""
        ...


def _hmac(key: bytes, content: bytes) -> bytes:
    return hmac.new(key, content, hashlib.sha256).digest()


def _require(headers: Mapping[str, str], name: str) -> str:
    value = headers.get(name)
    if not value:
        raise MissingHeader(name)
    return value


_b64decode = partial(base64.b64decode, validate=True)


def _decode(value: str, decoder: Callable[[str], bytes], header: str) -> bytes:
    try:
        return decoder(value)
    except ValueError as exc:
        raise MalformedHeader(f"{header} holds a signature that does not decode") from exc


def _timestamp(raw: str, header: str) -> int:
    # int() alone would also take " 12", "1_2", "+12" and non-ASCII digits; 12 digits is
    # past the year 30000, so anything longer is not a timestamp a sender meant.
    if not (raw.isascii() and raw.isdigit() and len(raw) <= 12):
        raise MalformedHeader(f"{header} is not a unix timestamp in whole seconds")
    return int(raw)


def _check_fresh(timestamp: int, now: float, tolerance: int) -> None:
    skew = now - timestamp
    if abs(skew) > tolerance:
        where = "in the past" if skew > 0 else "in the future"
        raise StaleTimestamp(f"signed timestamp is {abs(skew):.0f}s {where}; tolerance {tolerance}s")


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


def _prefixed_hex(value: str, prefix: str, header: str) -> bytes:
    if not value.startswith(prefix):
        raise MalformedHeader(f"{header} must look like '{prefix}<hex>'")
    return _decode(value.removeprefix(prefix), binascii.unhexlify, header)


# Signature candidates, the exact bytes that were signed, and the signed timestamp if any.
_Parsed = tuple[list[bytes], bytes, int | None]


class _HmacScheme:
    """HMAC-SHA256 over ``_content``, which ``sign`` and ``verify`` share so they cannot drift."""

    name: str
    id_headers: tuple[str, ...] = ()
    id_field: str | None = None  # a JSON body field, for senders that put the id there

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

    def delivery_id(self, body: bytes, headers: Mapping[str, str]) -> str | None:
        for name in self.id_headers:
            if headers.get(name):
                return headers[name]
        return _json_string(body, self.id_field) if self.id_field else None

    def sign(self, body: bytes, secret: str, *, now: float, msg_id: str | None = None) -> dict[str, str]:
        msg_id = msg_id or str(uuid.uuid4())
        timestamp = str(math.floor(now))
        digest = _hmac(self._signing_key(secret), self._content(body, msg_id, timestamp))
        return self._headers(digest, msg_id, timestamp)

    def _key(self, secret: str) -> bytes | None:
        # A secret that cannot become a key can never have signed anything.
        try:
            return self._signing_key(secret)
        except ValueError:
            return None

    def _signing_key(self, secret: str) -> bytes:
        return secret.encode()

    def _content(self, body: bytes, msg_id: str, timestamp: str) -> bytes:
        return body

    def _parse(self, body: bytes, headers: Mapping[str, str]) -> _Parsed:
        raise NotImplementedError

    def _headers(self, digest: bytes, msg_id: str, timestamp: str) -> dict[str, str]:
        raise NotImplementedError


class _StandardWebhooks(_HmacScheme):
    """``webhook-signature: v1,<base64> ...`` over ``"{id}.{timestamp}.{body}"``.

    Svix (and Resend through it) signs identically under ``svix-*`` header names.
    """

    name = "standard-webhooks"
    id_headers = ("webhook-id", "svix-id")

    def _parse(self, body: bytes, headers: Mapping[str, str]) -> _Parsed:
        # Any webhook-* header picks that spelling, so a partial set names what is missing.
        svix = not _has_any(headers, "webhook") and _has_any(headers, "svix")
        prefix = "svix" if svix else "webhook"
        msg_id = _require(headers, f"{prefix}-id")
        raw_timestamp = _require(headers, f"{prefix}-timestamp")
        signatures = _require(headers, f"{prefix}-signature")
        timestamp = _timestamp(raw_timestamp, f"{prefix}-timestamp")
        candidates = _standard_signatures(signatures, f"{prefix}-signature")
        try:
            return candidates, self._content(body, msg_id, raw_timestamp), timestamp
        except UnicodeEncodeError as exc:
            raise MalformedHeader(f"{prefix}-id is not valid text") from exc

    def _signing_key(self, secret: str) -> bytes:
        return _whsec_key(secret)

    def _content(self, body: bytes, msg_id: str, timestamp: str) -> bytes:
        return f"{msg_id}.{timestamp}.".encode() + body

    def _headers(self, digest: bytes, msg_id: str, timestamp: str) -> dict[str, str]:
        v1 = f"v1,{base64.b64encode(digest).decode()}"
        return {"webhook-id": msg_id, "webhook-timestamp": timestamp, "webhook-signature": v1}


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
    id_headers = ("x-github-delivery",)

    def _parse(self, body: bytes, headers: Mapping[str, str]) -> _Parsed:
        value = _require(headers, "x-hub-signature-256")
        return [_prefixed_hex(value, "sha256=", "x-hub-signature-256")], body, None

    def _headers(self, digest: bytes, msg_id: str, timestamp: str) -> dict[str, str]:
        return {"x-hub-signature-256": f"sha256={digest.hex()}", "x-github-delivery": msg_id}


class _Stripe(_HmacScheme):
    """``stripe-signature: t=<unix>,v1=<hex>...`` over ``"{t}.{body}"``.

    The key is the whole ``whsec_...`` string as UTF-8; Stripe does not base64-decode it.
    The event id lives in the body, so ``sign`` ignores ``msg_id``.
    """

    name = "stripe"
    id_field = "id"

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
        return candidates, self._content(body, "", raw_timestamp), timestamp

    def _content(self, body: bytes, msg_id: str, timestamp: str) -> bytes:
        return f"{timestamp}.".encode() + body

    def _headers(self, digest: bytes, msg_id: str, timestamp: str) -> dict[str, str]:
        return {"stripe-signature": f"t={timestamp},v1={digest.hex()}"}


class _Slack(_HmacScheme):
    """``x-slack-signature: v0=<hex>`` over ``"v0:{x-slack-request-timestamp}:{body}"``.

    Only Events API payloads carry an ``event_id``; ``sign`` ignores ``msg_id``.
    """

    name = "slack"
    id_field = "event_id"

    def _parse(self, body: bytes, headers: Mapping[str, str]) -> _Parsed:
        value = _require(headers, "x-slack-signature")
        raw_timestamp = _require(headers, "x-slack-request-timestamp")
        candidate = _prefixed_hex(value, "v0=", "x-slack-signature")
        timestamp = _timestamp(raw_timestamp, "x-slack-request-timestamp")
        return [candidate], self._content(body, "", raw_timestamp), timestamp

    def _content(self, body: bytes, msg_id: str, timestamp: str) -> bytes:
        return f"v0:{timestamp}:".encode() + body

    def _headers(self, digest: bytes, msg_id: str, timestamp: str) -> dict[str, str]:
        return {"x-slack-request-timestamp": timestamp, "x-slack-signature": f"v0={digest.hex()}"}


class _Shopify(_HmacScheme):
    """``x-shopify-hmac-sha256: <base64>`` (not hex) over the body. No timestamp."""

    name = "shopify"
    id_headers = ("x-shopify-webhook-id", "x-shopify-event-id")

    def _parse(self, body: bytes, headers: Mapping[str, str]) -> _Parsed:
        value = _require(headers, "x-shopify-hmac-sha256")
        return [_decode(value, _b64decode, "x-shopify-hmac-sha256")], body, None

    def _headers(self, digest: bytes, msg_id: str, timestamp: str) -> dict[str, str]:
        signature = base64.b64encode(digest).decode()
        return {"x-shopify-hmac-sha256": signature, "x-shopify-webhook-id": msg_id}


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
