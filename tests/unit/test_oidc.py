"""Specification of the OIDC check on Google-signed push requests (keys served by respx)."""

from __future__ import annotations

import base64
import json
import time
from datetime import UTC, datetime, timedelta

import httpx
import orjson
import pytest
import respx
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ingest.oidc import GOOGLE_CERTS_URL, OidcError, OidcUnavailable, OidcVerifier, cache_ttl, parse_keys
from tests.google_oidc import AUDIENCE, PUSH_ACCOUNT, GoogleSigner

SIGNER = GoogleSigner("key-1")
ROTATED = GoogleSigner("key-2")
STRANGER = GoogleSigner("key-1")  # same key id as ours, different key


class Clock:
    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
async def certs():  # type: ignore[no-untyped-def]
    with respx.mock(assert_all_called=False) as mock:
        route = mock.get(GOOGLE_CERTS_URL).respond(
            200, json=SIGNER.jwks(), headers={"cache-control": "public, max-age=3600, must-revalidate"}
        )
        yield route


@pytest.fixture
async def verifier(clock: Clock):  # type: ignore[no-untyped-def]
    async with httpx.AsyncClient() as http:
        yield OidcVerifier(http, clock=clock)


async def check(verifier: OidcVerifier, header: str | None) -> dict[str, object]:
    return await verifier.verify(header, audience=AUDIENCE, emails={PUSH_ACCOUNT})


async def reason(verifier: OidcVerifier, header: str | None) -> str:
    with pytest.raises(OidcError) as raised:
        await check(verifier, header)
    return raised.value.reason


async def test_a_valid_token_is_accepted_and_its_claims_returned(certs, verifier, clock) -> None:
    claims = await check(verifier, SIGNER.header(now=clock.now))
    assert claims["email"] == PUSH_ACCOUNT
    assert claims["aud"] == AUDIENCE


async def test_the_short_issuer_spelling_is_accepted_too(certs, verifier, clock) -> None:
    await check(verifier, SIGNER.header(now=clock.now, iss="accounts.google.com"))


async def test_a_missing_or_blank_header_is_rejected(certs, verifier) -> None:
    assert await reason(verifier, None) == "missing header"
    assert await reason(verifier, "  ") == "missing header"


async def test_a_non_bearer_header_is_malformed(certs, verifier, clock) -> None:
    assert await reason(verifier, "Basic " + SIGNER.token(now=clock.now)) == "malformed"
    assert await reason(verifier, "Bearer") == "malformed"


async def test_a_token_for_another_audience_is_rejected(certs, verifier, clock) -> None:
    assert await reason(verifier, SIGNER.header(now=clock.now, aud="https://elsewhere.test/")) == "wrong audience"


async def test_a_token_of_another_service_account_is_rejected(certs, verifier, clock) -> None:
    header = SIGNER.header(now=clock.now, email="someone@else.iam.gserviceaccount.com")
    assert await reason(verifier, header) == "wrong email"


async def test_an_unverified_email_is_rejected(certs, verifier, clock) -> None:
    assert await reason(verifier, SIGNER.header(now=clock.now, email_verified=False)) == "email not verified"
    assert await reason(verifier, SIGNER.header(now=clock.now, email_verified=None)) == "email not verified"


async def test_an_expired_token_is_rejected(certs, verifier, clock) -> None:
    assert await reason(verifier, SIGNER.header(now=clock.now - 7200)) == "expired"


async def test_a_token_issued_in_the_future_is_rejected(certs, verifier, clock) -> None:
    assert await reason(verifier, SIGNER.header(now=clock.now + 600)) == "not yet valid"


async def test_a_token_from_another_issuer_is_rejected(certs, verifier, clock) -> None:
    assert await reason(verifier, SIGNER.header(now=clock.now, iss="https://evil.example")) == "wrong issuer"


async def test_a_token_signed_with_another_key_is_rejected(certs, verifier, clock) -> None:
    assert await reason(verifier, STRANGER.header(now=clock.now)) == "bad signature"


async def test_a_tampered_payload_is_rejected(certs, verifier, clock) -> None:
    head, _, sig = SIGNER.token(now=clock.now).split(".")
    forged = base64.urlsafe_b64encode(
        orjson.dumps({"iss": "https://accounts.google.com", "aud": AUDIENCE, "email": PUSH_ACCOUNT, "exp": 9e9})
    ).rstrip(b"=")
    assert await reason(verifier, f"Bearer {head}.{forged.decode()}.{sig}") == "bad signature"


async def test_alg_none_and_hmac_tokens_are_malformed(certs, verifier, clock) -> None:
    def unsigned(alg: str) -> str:
        head = base64.urlsafe_b64encode(orjson.dumps({"alg": alg, "kid": "key-1"})).rstrip(b"=").decode()
        body = base64.urlsafe_b64encode(orjson.dumps({"exp": clock.now + 60})).rstrip(b"=").decode()
        return f"Bearer {head}.{body}.c2ln"

    assert await reason(verifier, unsigned("none")) == "malformed"
    assert await reason(verifier, unsigned("HS256")) == "malformed"


async def test_an_unknown_key_id_is_rejected_after_one_refetch(certs, verifier, clock) -> None:
    await check(verifier, SIGNER.header(now=clock.now))
    clock.now += 60
    assert await reason(verifier, ROTATED.header(now=clock.now)) == "unknown key id"
    assert certs.call_count == 2


async def test_keys_rotated_by_google_are_picked_up_on_an_unknown_key_id(certs, verifier, clock) -> None:
    await check(verifier, SIGNER.header(now=clock.now))
    certs.respond(200, json={"keys": SIGNER.jwks()["keys"] + ROTATED.jwks()["keys"]})
    clock.now += 60
    await check(verifier, ROTATED.header(now=clock.now))


async def test_refetching_on_unknown_key_ids_is_rate_limited(certs, verifier, clock) -> None:
    await check(verifier, SIGNER.header(now=clock.now))
    for _ in range(5):
        assert await reason(verifier, ROTATED.header(now=clock.now)) == "unknown key id"
    assert certs.call_count == 1


async def test_keys_are_cached_for_their_max_age(certs, verifier, clock) -> None:
    for _ in range(3):
        await check(verifier, SIGNER.header(now=clock.now))
    assert certs.call_count == 1
    clock.now += 3601
    await check(verifier, SIGNER.header(now=clock.now))
    assert certs.call_count == 2


async def test_unreachable_keys_are_unavailable_not_a_rejection(verifier, clock) -> None:
    with respx.mock() as mock:
        mock.get(GOOGLE_CERTS_URL).respond(500)
        with pytest.raises(OidcUnavailable):
            await check(verifier, SIGNER.header(now=clock.now))


async def test_cached_keys_outlive_a_failed_refresh(certs, verifier, clock) -> None:
    await check(verifier, SIGNER.header(now=clock.now))
    certs.respond(503)
    clock.now += 4000
    await check(verifier, SIGNER.header(now=clock.now))


def test_the_pem_certificate_form_is_read_too() -> None:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.x509.oid import NameOID

    private = SIGNER.key.private_key
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test")])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(private.public_key())
        .serial_number(1)
        .not_valid_before(now)
        .not_valid_after(now + timedelta(days=1))
        .sign(private, hashes.SHA256())
    )
    keys = parse_keys({"key-1": cert.public_bytes(serialization.Encoding.PEM).decode()})
    assert list(keys) == ["key-1"]


def test_cache_lifetime_follows_max_age_within_bounds() -> None:
    assert cache_ttl("public, max-age=19845, must-revalidate, no-transform") == 19845
    assert cache_ttl(None) == 300
    assert cache_ttl("max-age=999999999") == 86400


_b64 = st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_", max_size=60)
_headers = st.one_of(
    st.none(),
    st.text(max_size=300),
    st.builds(lambda t: "Bearer " + t, st.text(max_size=300)),
    st.builds(lambda a, b, c: f"Bearer {a}.{b}.{c}", _b64, _b64, _b64),
    st.builds(
        lambda h, c: (
            "Bearer "
            + ".".join(base64.urlsafe_b64encode(json.dumps(x).encode()).rstrip(b"=").decode() for x in (h, c))
            + ".AAAA"
        ),
        st.dictionaries(st.sampled_from(["alg", "kid", "crit", "b64", "typ"]), st.one_of(st.text(), st.booleans())),
        st.dictionaries(st.sampled_from(["exp", "iat", "aud", "iss", "email"]), st.one_of(st.integers(), st.text())),
    ),
    # Properly signed, but with claims of any shape.
    st.builds(
        lambda claims: "Bearer " + SIGNER.token(**claims),
        st.dictionaries(
            st.sampled_from(["exp", "iat", "aud", "iss", "email", "email_verified"]),
            st.one_of(
                st.none(),
                st.booleans(),
                st.integers(-(2**70), 2**70),
                st.floats(allow_nan=False, allow_infinity=False),
                st.text(max_size=20),
                st.lists(st.text(max_size=5), max_size=3),
            ),
        ),
    ),
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(header=_headers)
async def test_any_header_gives_checked_claims_or_oidc_error_and_nothing_else(
    certs, verifier, header: str | None
) -> None:
    try:
        claims = await check(verifier, header)
    except OidcError:
        return
    assert claims["email"] == PUSH_ACCOUNT and claims["email_verified"] in (True, "true")
    assert AUDIENCE in (claims["aud"] if isinstance(claims["aud"], list) else [claims["aud"]])
