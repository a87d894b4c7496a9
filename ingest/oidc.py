"""Verifying Google-signed OIDC tokens, as Pub/Sub push and Cloud Scheduler send them.

`Authorization: Bearer <JWT>` (RS256, `kid` in the header). The signature is checked against
Google's published keys, then `exp`/`iat`, the issuer, the audience, and the caller's
`email` with `email_verified`: Google's own helper does not check the email, so without it
any Google-signed token carrying our audience would pass.

Keys are cached for the `Cache-Control: max-age` Google sends (keys rotate about daily). A
token naming an unknown key id triggers one early refetch, at most once per
`refetch_interval_s`, so forged key ids cannot make us hammer Google.

    OidcError(reason)      the token is not acceptable: answer 401, store nothing
    OidcUnavailable        Google's keys could not be fetched: answer 503, the sender retries
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import logging
import re
import time
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from typing import Any

import httpx
import orjson
from joserfc import jws
from joserfc.errors import BadSignatureError, JoseError
from joserfc.jwk import RSAKey

log = logging.getLogger(__name__)

GOOGLE_CERTS_URL = "https://www.googleapis.com/oauth2/v3/certs"
GOOGLE_ISSUERS = ("https://accounts.google.com", "accounts.google.com")

# Reasons, stable strings: they become error codes and metric labels.
MISSING_HEADER = "missing header"
MALFORMED = "malformed"
UNKNOWN_KEY_ID = "unknown key id"
BAD_SIGNATURE = "bad signature"
EXPIRED = "expired"
NOT_YET_VALID = "not yet valid"
WRONG_ISSUER = "wrong issuer"
WRONG_AUDIENCE = "wrong audience"
WRONG_EMAIL = "wrong email"
EMAIL_NOT_VERIFIED = "email not verified"

# Google's tokens are about 1 KB; anything much larger is not one of them.
_MAX_TOKEN_CHARS = 8192
_B64URL = re.compile(r"[A-Za-z0-9_-]*")
_MAX_AGE = re.compile(r"(?:^|[,\s])max-age\s*=\s*(\d+)", re.IGNORECASE)
_DEFAULT_TTL_S = 300.0
_MAX_TTL_S = 24 * 3600.0


class OidcError(Exception):
    """The token is missing or not acceptable; `reason` is one of the module's reason strings."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class OidcUnavailable(Exception):
    """Google's signing keys could not be fetched and none are cached."""


@dataclass(frozen=True, slots=True)
class _KeySet:
    keys: Mapping[str, RSAKey]
    fetched_at: float
    expires_at: float


class OidcVerifier:
    """Verifies bearer tokens against Google's keys; one per process, shared by requests."""

    def __init__(
        self,
        http: httpx.AsyncClient,
        certs_url: str = GOOGLE_CERTS_URL,
        issuers: Collection[str] = GOOGLE_ISSUERS,
        *,
        leeway_s: float = 30.0,
        refetch_interval_s: float = 30.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._http = http
        self._certs_url = certs_url
        self._issuers = frozenset(issuers)
        self._leeway_s = leeway_s
        self._refetch_interval_s = refetch_interval_s
        self._clock = clock
        self._keyset: _KeySet | None = None
        self._lock = asyncio.Lock()

    async def verify(
        self, authorization_header: str | None, *, audience: str, emails: Collection[str]
    ) -> dict[str, Any]:
        """The token's claims if it is Google-signed, current, for `audience`, from one of `emails`.

        Raises `OidcError` naming the first problem, or `OidcUnavailable` when no keys can be had.
        """
        token = _bearer_token(authorization_header)
        header, claims = _decode_unverified(token)
        kid = header["kid"]
        key = await self._key(kid)
        try:
            jws.deserialize_compact(token, key, algorithms=["RS256"])
        except BadSignatureError:
            raise OidcError(BAD_SIGNATURE) from None
        except (JoseError, ValueError, TypeError):
            raise OidcError(MALFORMED) from None
        self._check_claims(claims, audience, emails)
        return claims

    def _check_claims(self, claims: Mapping[str, Any], audience: str, emails: Collection[str]) -> None:
        now = self._clock()
        exp = claims.get("exp")
        if not isinstance(exp, int | float) or isinstance(exp, bool):
            raise OidcError(MALFORMED)
        if now > exp + self._leeway_s:
            raise OidcError(EXPIRED)
        iat = claims.get("iat")
        if iat is not None and (not _is_number(iat) or iat > now + self._leeway_s):
            raise OidcError(NOT_YET_VALID if _is_number(iat) else MALFORMED)
        # Claims are compared by type first: a list or object where a string belongs is simply wrong.
        iss = claims.get("iss")
        if not isinstance(iss, str) or iss not in self._issuers:
            raise OidcError(WRONG_ISSUER)
        aud = claims.get("aud")
        audiences = aud if isinstance(aud, list) else [aud]
        if not audience or not any(isinstance(a, str) and a == audience for a in audiences):
            raise OidcError(WRONG_AUDIENCE)
        email = claims.get("email")
        if not isinstance(email, str) or email not in set(emails):
            raise OidcError(WRONG_EMAIL)
        if claims.get("email_verified") not in (True, "true"):
            raise OidcError(EMAIL_NOT_VERIFIED)

    async def _key(self, kid: str) -> RSAKey:
        keyset = self._keyset
        now = self._clock()
        if keyset is None or now >= keyset.expires_at:
            keyset = await self._refresh(stale=keyset)
        if kid in keyset.keys:
            return keyset.keys[kid]
        # Google may have rotated before our cache expired: look again, but not too often.
        if now - keyset.fetched_at >= self._refetch_interval_s:
            keyset = await self._refresh(stale=keyset, force=True)
            if kid in keyset.keys:
                return keyset.keys[kid]
        raise OidcError(UNKNOWN_KEY_ID)

    async def _refresh(self, stale: _KeySet | None, force: bool = False) -> _KeySet:
        async with self._lock:
            current = self._keyset
            # Another request refreshed while this one waited for the lock.
            if current is not None and current is not stale:
                return current
            now = self._clock()
            if force and current is not None and now - current.fetched_at < self._refetch_interval_s:
                return current
            try:
                keys, ttl = await self._fetch()
            except OidcUnavailable:
                if current is None:
                    raise
                # Keys past their max-age are still better than refusing every push.
                log.warning("could not refresh Google's signing keys; keeping the cached ones")
                self._keyset = _KeySet(current.keys, now, now + min(_DEFAULT_TTL_S, 60.0))
                return self._keyset
            self._keyset = _KeySet(keys, now, now + ttl)
            return self._keyset

    async def _fetch(self) -> tuple[dict[str, RSAKey], float]:
        try:
            response = await self._http.get(self._certs_url, timeout=10.0)
        except httpx.HTTPError as exc:
            raise OidcUnavailable(f"cannot fetch signing keys: {type(exc).__name__}") from None
        if response.status_code != 200:
            raise OidcUnavailable(f"signing keys answered {response.status_code}")
        try:
            document = orjson.loads(response.content)
        except orjson.JSONDecodeError:
            raise OidcUnavailable("signing keys are not JSON") from None
        keys = parse_keys(document)
        if not keys:
            raise OidcUnavailable("no usable RSA signing keys were published")
        return keys, cache_ttl(response.headers.get("cache-control"))


def parse_keys(document: object) -> dict[str, RSAKey]:
    """Keys by id from a JWKS (`{"keys": [...]}`) or Google's PEM form (`{kid: certificate}`)."""
    found: dict[str, RSAKey] = {}
    if isinstance(document, dict) and isinstance(document.get("keys"), list):
        for jwk in document["keys"]:
            if not isinstance(jwk, dict) or jwk.get("kty") != "RSA" or not isinstance(jwk.get("kid"), str):
                continue
            public = {k: v for k, v in jwk.items() if k in {"kty", "n", "e", "kid"}}
            try:
                found[jwk["kid"]] = RSAKey.import_key(public)
            except (JoseError, ValueError, TypeError):
                log.warning("skipping an unreadable signing key")
    elif isinstance(document, dict):
        for kid, pem in document.items():
            if not isinstance(pem, str):
                continue
            try:
                found[str(kid)] = RSAKey.import_key(pem.encode())
            except (JoseError, ValueError, TypeError):
                log.warning("skipping an unreadable signing certificate")
    return found


def cache_ttl(cache_control: str | None) -> float:
    """Seconds to keep the keys: `max-age` when given (bounded), else a few minutes."""
    match = _MAX_AGE.search(cache_control or "")
    if match is None:
        return _DEFAULT_TTL_S
    return min(float(match.group(1)), _MAX_TTL_S)


def _bearer_token(header: str | None) -> str:
    if header is None or not header.strip():
        raise OidcError(MISSING_HEADER)
    scheme, _, token = header.strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token or len(token) > _MAX_TOKEN_CHARS:
        raise OidcError(MALFORMED)
    return token


def _decode_unverified(token: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """Header and claims of a compact JWS, shape-checked only; nothing here is trusted yet."""
    parts = token.split(".")
    if len(parts) != 3 or not all(_B64URL.fullmatch(p) for p in parts):
        raise OidcError(MALFORMED)
    header = _json_object(parts[0])
    claims = _json_object(parts[1])
    if header.get("alg") != "RS256" or not isinstance(header.get("kid"), str) or not header["kid"]:
        raise OidcError(MALFORMED)
    if "crit" in header:
        raise OidcError(MALFORMED)
    return header, claims


def _json_object(segment: str) -> dict[str, Any]:
    try:
        raw = base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))
        value = orjson.loads(raw)
    except (binascii.Error, ValueError):
        raise OidcError(MALFORMED) from None
    if not isinstance(value, dict):
        raise OidcError(MALFORMED)
    return value


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)
