"""Specification of inbound webhook signature verification, scheme by scheme."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import time
from dataclasses import FrozenInstanceError
from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from standardwebhooks.webhooks import Webhook

from ingest.signatures import (
    DEFAULT_SCHEME,
    SCHEMES,
    BadSignature,
    MalformedHeader,
    MissingHeader,
    SignatureError,
    StaleTimestamp,
    Verified,
    generate_secret,
    get_scheme,
)

NOW = 1_700_000_000.0
BODY = b'{"id": "evt_123", "event_id": "Ev42", "type": "thing.happened"}'

# The current and previous secret for each scheme, in the form each provider hands out.
SECRETS = {
    "standard-webhooks": ("whsec_" + base64.b64encode(b"n" * 32).decode(), generate_secret()),
    "github": ("gh-current-secret", "gh-previous-secret"),
    "stripe": ("whsec_stripeCurrentSecret", "whsec_stripePreviousSecret"),
    "slack": ("slack-current-secret", "slack-previous-secret"),
    "shopify": ("shopify-current-secret", "shopify-previous-secret"),
}
REQUIRED_HEADERS = {
    "standard-webhooks": ("webhook-id", "webhook-timestamp", "webhook-signature"),
    "github": ("x-hub-signature-256",),
    "stripe": ("stripe-signature",),
    "slack": ("x-slack-signature", "x-slack-request-timestamp"),
    "shopify": ("x-shopify-hmac-sha256",),
}
TIMESTAMPED = ["standard-webhooks", "stripe", "slack"]
UNTIMESTAMPED = ["github", "shopify"]
ALL = sorted(SCHEMES)


def current(name: str) -> str:
    return SECRETS[name][0]


def previous(name: str) -> str:
    return SECRETS[name][1]


def signed(name: str, body: bytes = BODY, *, secret: str | None = None, now: float = NOW) -> dict[str, str]:
    return SCHEMES[name].sign(body, secret or current(name), now=now, msg_id="msg_1")


def verify(name: str, headers: dict[str, str], body: bytes = BODY, *, now: float = NOW) -> Verified:
    return SCHEMES[name].verify(body, headers, [current(name)], now)


# --- every scheme -------------------------------------------------------------------------


@pytest.mark.parametrize("name", ALL)
def test_accepts_correctly_signed_request(name: str) -> None:
    result = verify(name, signed(name))

    expected_timestamp = int(NOW) if name in TIMESTAMPED else None
    assert result == Verified(scheme=name, secret_index=0, timestamp=expected_timestamp)


@pytest.mark.parametrize("name", ALL)
def test_rejects_tampered_body(name: str) -> None:
    with pytest.raises(BadSignature) as caught:
        verify(name, signed(name), body=BODY.replace(b"123", b"124"))

    assert caught.value.reason == "bad_signature"


@pytest.mark.parametrize("name", ALL)
def test_rejects_request_signed_with_wrong_secret(name: str) -> None:
    with pytest.raises(BadSignature):
        verify(name, signed(name, secret=previous(name)))


@pytest.mark.parametrize("name", ALL)
def test_accepts_old_secret_during_rotation_and_reports_its_index(name: str) -> None:
    headers = signed(name, secret=previous(name))

    result = SCHEMES[name].verify(BODY, headers, [current(name), previous(name)], NOW)

    assert result.secret_index == 1


@pytest.mark.parametrize("name", ALL)
def test_rejects_everything_when_no_secrets_are_configured(name: str) -> None:
    with pytest.raises(BadSignature):
        SCHEMES[name].verify(BODY, signed(name), [], NOW)


@pytest.mark.parametrize(("name", "header"), [(name, header) for name in ALL for header in REQUIRED_HEADERS[name]])
def test_rejects_missing_header_and_names_it(name: str, header: str) -> None:
    headers = signed(name)
    del headers[header]

    with pytest.raises(MissingHeader) as caught:
        verify(name, headers)

    assert caught.value.reason == "missing_header"
    assert caught.value.header == header
    assert header in str(caught.value)


@pytest.mark.parametrize("name", ALL)
def test_treats_empty_header_as_missing(name: str) -> None:
    headers = signed(name)
    header = REQUIRED_HEADERS[name][0]
    headers[header] = ""

    with pytest.raises(MissingHeader, match=header):
        verify(name, headers)


@pytest.mark.parametrize("name", TIMESTAMPED)
def test_rejects_stale_timestamp(name: str) -> None:
    with pytest.raises(StaleTimestamp) as caught:
        verify(name, signed(name, now=NOW - 301))

    assert caught.value.reason == "stale_timestamp"
    assert "in the past" in str(caught.value)


@pytest.mark.parametrize("name", TIMESTAMPED)
def test_rejects_future_timestamp_beyond_tolerance(name: str) -> None:
    with pytest.raises(StaleTimestamp, match="in the future"):
        verify(name, signed(name, now=NOW + 301))


@pytest.mark.parametrize("name", TIMESTAMPED)
@pytest.mark.parametrize("skew", [-300, 300])
def test_accepts_timestamp_at_the_edge_of_tolerance(name: str, skew: int) -> None:
    assert verify(name, signed(name, now=NOW + skew)).timestamp == int(NOW) + skew


@pytest.mark.parametrize("name", TIMESTAMPED)
def test_honours_a_custom_tolerance(name: str) -> None:
    headers = signed(name, now=NOW - 60)

    with pytest.raises(StaleTimestamp):
        SCHEMES[name].verify(BODY, headers, [current(name)], NOW, tolerance=30)


@pytest.mark.parametrize("name", UNTIMESTAMPED)
def test_untimestamped_scheme_ignores_the_clock(name: str) -> None:
    result = verify(name, signed(name, now=NOW), now=NOW + 10 * 365 * 86400)

    assert result.timestamp is None


@pytest.mark.parametrize(
    ("name", "header", "value"),
    [
        ("standard-webhooks", "webhook-timestamp", "1700000000.5"),
        ("standard-webhooks", "webhook-timestamp", "-1700000000"),
        ("standard-webhooks", "webhook-timestamp", " 1700000000"),
        ("standard-webhooks", "webhook-timestamp", "1_700_000_000"),
        ("slack", "x-slack-request-timestamp", "yesterday"),
        ("slack", "x-slack-request-timestamp", "\u0661\u0667" + "\u0660" * 8),  # Arabic-Indic
        ("stripe", "stripe-signature", "t=soon,v1=00"),
    ],
)
def test_rejects_timestamp_that_is_not_whole_unix_seconds(name: str, header: str, value: str) -> None:
    headers = signed(name)
    headers[header] = value

    with pytest.raises(MalformedHeader) as caught:
        verify(name, headers)

    assert caught.value.reason == "malformed_header"


def test_reports_missing_header_before_malformed_one() -> None:
    headers = signed("standard-webhooks")
    headers["webhook-timestamp"] = "not-a-number"
    del headers["webhook-signature"]

    with pytest.raises(MissingHeader):
        verify("standard-webhooks", headers)


def test_reports_malformed_header_before_stale_timestamp() -> None:
    headers = signed("slack", now=NOW - 3600)
    headers["x-slack-signature"] = "v0=not-hex"

    with pytest.raises(MalformedHeader):
        verify("slack", headers)


@pytest.mark.parametrize("name", TIMESTAMPED)
def test_reports_stale_timestamp_before_bad_signature(name: str) -> None:
    headers = signed(name, secret=previous(name), now=NOW - 3600)

    with pytest.raises(StaleTimestamp):
        verify(name, headers)


@pytest.mark.parametrize("name", ALL)
def test_errors_never_reveal_the_secret_or_expected_signature(name: str) -> None:
    good = signed(name)
    expected = good[REQUIRED_HEADERS[name][0]]
    attempts = [
        (signed(name, secret=previous(name)), NOW),
        (signed(name, now=NOW - 3600), NOW),
        ({**good, REQUIRED_HEADERS[name][0]: "garbage"}, NOW),
    ]
    for headers, now in attempts:
        with pytest.raises(SignatureError) as caught:
            verify(name, headers, body=BODY + b" ", now=now)
        message = f"{caught.value} {caught.value!r} {caught.value.__cause__!r}"
        assert current(name) not in message
        assert expected not in message


# --- standard-webhooks ----------------------------------------------------------------------


def test_standard_webhooks_matches_the_published_example() -> None:
    headers = {
        "webhook-id": "msg_p5jXN8AQM9LWM0D4loKWxJek",
        "webhook-timestamp": "1614265330",
        "webhook-signature": "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=",
    }
    secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"

    result = SCHEMES["standard-webhooks"].verify(b'{"test": 2432232314}', headers, [secret], 1614265330)

    assert result.timestamp == 1614265330


def test_standard_webhooks_accepts_signature_made_by_the_official_library() -> None:
    body = '{"text": "héllo"}'
    timestamp = datetime.fromtimestamp(NOW, tz=UTC)
    signature = Webhook(current("standard-webhooks")).sign("msg_official", timestamp, body)
    headers = {
        "webhook-id": "msg_official",
        "webhook-timestamp": str(int(NOW)),
        "webhook-signature": signature,
    }

    assert verify("standard-webhooks", headers, body=body.encode()).secret_index == 0


def test_official_library_accepts_our_standard_webhooks_signature() -> None:
    # The official verifier reads the wall clock, so sign at the real current time.
    headers = signed("standard-webhooks", now=time.time())

    Webhook(current("standard-webhooks")).verify(BODY, headers, json_parse=False)


def test_standard_webhooks_accepts_when_any_listed_signature_matches() -> None:
    headers = signed("standard-webhooks")
    other = signed("standard-webhooks", secret=previous("standard-webhooks"))
    headers["webhook-signature"] = f"{other['webhook-signature']} {headers['webhook-signature']}"

    assert verify("standard-webhooks", headers).secret_index == 0


def test_standard_webhooks_skips_signature_versions_it_does_not_check() -> None:
    headers = signed("standard-webhooks")
    # Other versions' payloads are not ours to parse, so not even their encoding is checked.
    headers["webhook-signature"] = f"v1a,~opaque~ v2,x {headers['webhook-signature']}"

    assert verify("standard-webhooks", headers).secret_index == 0


def test_standard_webhooks_rejects_header_with_only_unknown_versions() -> None:
    headers = signed("standard-webhooks")
    headers["webhook-signature"] = "v1a,c29tZWVkMjU1MTk="

    with pytest.raises(BadSignature):
        verify("standard-webhooks", headers)


@pytest.mark.parametrize("value", ["v1", "v1,not base64!", "v1,QUJD=extra"])
def test_standard_webhooks_rejects_malformed_signature_entry(value: str) -> None:
    headers = signed("standard-webhooks")
    headers["webhook-signature"] = value

    with pytest.raises(MalformedHeader):
        verify("standard-webhooks", headers)


def test_standard_webhooks_accepts_svix_header_names() -> None:
    headers = {f"svix-{key.removeprefix('webhook-')}": v for key, v in signed("standard-webhooks").items()}

    assert verify("standard-webhooks", headers).timestamp == int(NOW)


def test_standard_webhooks_names_the_missing_webhook_header_when_spellings_are_mixed() -> None:
    headers = signed("standard-webhooks")
    headers["svix-timestamp"] = headers.pop("webhook-timestamp")

    with pytest.raises(MissingHeader, match="webhook-timestamp"):
        verify("standard-webhooks", headers)


def test_standard_webhooks_decodes_secret_so_raw_secret_string_never_matches() -> None:
    secret = current("standard-webhooks")
    key = base64.b64decode(secret.removeprefix("whsec_"))
    headers = signed("standard-webhooks")

    digest = hmac.new(key, f"msg_1.{int(NOW)}.".encode() + BODY, hashlib.sha256).digest()

    assert headers["webhook-signature"] == "v1," + base64.b64encode(digest).decode()


def test_standard_webhooks_accepts_secret_without_prefix_or_padding() -> None:
    secret = "whsec_" + base64.b64encode(b"k" * 25).decode()
    bare = secret.removeprefix("whsec_").rstrip("=")
    headers = SCHEMES["standard-webhooks"].sign(BODY, secret, now=NOW)

    assert SCHEMES["standard-webhooks"].verify(BODY, headers, [bare], NOW).secret_index == 0


def test_standard_webhooks_secret_that_cannot_be_decoded_never_matches() -> None:
    secrets = ["whsec_not*base64", "whsec_", current("standard-webhooks")]

    result = SCHEMES["standard-webhooks"].verify(BODY, signed("standard-webhooks"), secrets, NOW)

    assert result.secret_index == 2


@pytest.mark.parametrize("secret", ["whsec_not*base64", "whsec_"])
def test_standard_webhooks_refuses_to_sign_with_undecodable_secret(secret: str) -> None:
    with pytest.raises(ValueError, match="standard-webhooks secret"):
        SCHEMES["standard-webhooks"].sign(BODY, secret, now=NOW)


# --- github ---------------------------------------------------------------------------------


def test_github_matches_the_published_example() -> None:
    digest = "757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"
    headers = {"x-hub-signature-256": f"sha256={digest}"}

    result = SCHEMES["github"].verify(b"Hello, World!", headers, ["It's a Secret to Everybody"], NOW)

    assert result == Verified(scheme="github", secret_index=0, timestamp=None)


@pytest.mark.parametrize("value", ["sha1=0123abcd", "0123abcd", "sha256=xyz", "sha256=abc"])
def test_github_rejects_malformed_signature_header(value: str) -> None:
    with pytest.raises(MalformedHeader, match="x-hub-signature-256"):
        verify("github", {"x-hub-signature-256": value})


def test_github_accepts_uppercase_hex() -> None:
    headers = signed("github")
    algorithm, hex_digest = headers["x-hub-signature-256"].split("=")
    headers["x-hub-signature-256"] = f"{algorithm}={hex_digest.upper()}"

    assert verify("github", headers).secret_index == 0


# --- stripe ---------------------------------------------------------------------------------


def test_stripe_keys_hmac_with_the_whole_secret_string() -> None:
    secret = current("stripe")
    digest = hmac.new(secret.encode(), f"{int(NOW)}.".encode() + BODY, hashlib.sha256).hexdigest()
    headers = {"stripe-signature": f"t={int(NOW)},v1={digest}"}

    assert verify("stripe", headers).secret_index == 0
    assert signed("stripe") == headers


def test_stripe_accepts_when_any_v1_signature_matches() -> None:
    good = signed("stripe")["stripe-signature"]
    other = signed("stripe", secret=previous("stripe"))["stripe-signature"]
    headers = {"stripe-signature": f"{good},{other.split(',')[1]}"}

    assert verify("stripe", headers).secret_index == 0


def test_stripe_ignores_v0_and_unknown_keys() -> None:
    good = signed("stripe")["stripe-signature"]
    headers = {"stripe-signature": f"{good},v0=deadbeef,scheme2=whatever"}

    assert verify("stripe", headers).secret_index == 0


def test_stripe_rejects_header_with_only_a_v0_signature() -> None:
    with pytest.raises(BadSignature):
        verify("stripe", {"stripe-signature": f"t={int(NOW)},v0=deadbeef"})


@pytest.mark.parametrize(
    "value",
    [
        "v1=deadbeef",
        f"t={int(NOW)},v1=not-hex",
        f"t={int(NOW)},t={int(NOW)},v1=deadbeef",
        f"t={int(NOW)},garbage",
    ],
)
def test_stripe_rejects_malformed_signature_header(value: str) -> None:
    with pytest.raises(MalformedHeader, match="stripe-signature"):
        verify("stripe", {"stripe-signature": value})


# --- slack ----------------------------------------------------------------------------------


def test_slack_matches_the_published_example() -> None:
    body = (
        b"token=xyzz0WbapA4vBCDEFasx0q6G&team_id=T1DC2JH3J&team_domain=testteamnow"
        b"&channel_id=G8PSS9T3V&channel_name=foobar&user_id=U2CERLKJA&user_name=roadrunner"
        b"&command=%2Fwebhook-collect&text=&response_url=https%3A%2F%2Fhooks.slack.com%2F"
        b"commands%2FT1DC2JH3J%2F397700885554%2F96rGlfmibIGlgcZRskXaIFfN"
        b"&trigger_id=398738663015.47445629121.803a0bc887a14d10d2c447fce8b6703c"
    )
    headers = {
        "x-slack-request-timestamp": "1531420618",
        "x-slack-signature": "v0=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503",
    }

    result = SCHEMES["slack"].verify(body, headers, ["8f742231b10e8888abcd99yyyzzz85a5"], 1531420618)

    assert result.timestamp == 1531420618


@pytest.mark.parametrize("value", ["v1=abcd", "abcd", "v0=xyz"])
def test_slack_rejects_malformed_signature_header(value: str) -> None:
    headers = signed("slack")
    headers["x-slack-signature"] = value

    with pytest.raises(MalformedHeader, match="x-slack-signature"):
        verify("slack", headers)


# --- shopify --------------------------------------------------------------------------------


def test_shopify_signature_is_base64_of_the_body_hmac() -> None:
    digest = hmac.new(current("shopify").encode(), BODY, hashlib.sha256).digest()

    assert signed("shopify")["x-shopify-hmac-sha256"] == base64.b64encode(digest).decode()


def test_shopify_rejects_hex_encoded_signature() -> None:
    hex_digest = hmac.new(current("shopify").encode(), BODY, hashlib.sha256).hexdigest()

    with pytest.raises(BadSignature):
        verify("shopify", {"x-shopify-hmac-sha256": hex_digest})


def test_shopify_rejects_signature_that_is_not_base64() -> None:
    with pytest.raises(MalformedHeader, match="x-shopify-hmac-sha256"):
        verify("shopify", {"x-shopify-hmac-sha256": "not base64!"})


# --- delivery ids ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "headers", "expected"),
    [
        ("standard-webhooks", {"webhook-id": "msg_a"}, "msg_a"),
        ("standard-webhooks", {"svix-id": "msg_b"}, "msg_b"),
        ("standard-webhooks", {}, None),
        (
            "github",
            {"x-github-delivery": "72d3162e-cc78-11e3-81ab-4c9367dc0958"},
            "72d3162e-cc78-11e3-81ab-4c9367dc0958",
        ),
        ("github", {}, None),
        ("shopify", {"x-shopify-webhook-id": "wh_1", "x-shopify-event-id": "ev_1"}, "wh_1"),
        ("shopify", {"x-shopify-event-id": "ev_1"}, "ev_1"),
        ("shopify", {}, None),
    ],
)
def test_delivery_id_comes_from_the_sender_header(name: str, headers: dict[str, str], expected: str | None) -> None:
    assert SCHEMES[name].delivery_id(BODY, headers) == expected


@pytest.mark.parametrize(
    ("name", "body", "expected"),
    [
        ("stripe", b'{"id": "evt_1", "object": "event"}', "evt_1"),
        ("stripe", b'{"id": 17}', None),
        ("stripe", b'["evt_1"]', None),
        ("stripe", b"not json", None),
        ("stripe", b"\xff\xfe", None),
        ("slack", b'{"type": "event_callback", "event_id": "Ev08MFMKH6"}', "Ev08MFMKH6"),
        ("slack", b'{"type": "url_verification", "challenge": "x"}', None),
        ("slack", b"token=abc&command=%2Fdo", None),
    ],
)
def test_delivery_id_comes_from_the_json_body(name: str, body: bytes, expected: str | None) -> None:
    assert SCHEMES[name].delivery_id(body, {}) == expected


@pytest.mark.parametrize("name", ["standard-webhooks", "github", "shopify"])
def test_signed_msg_id_becomes_the_delivery_id(name: str) -> None:
    headers = SCHEMES[name].sign(BODY, current(name), now=NOW, msg_id="msg_chosen")

    assert SCHEMES[name].delivery_id(BODY, headers) == "msg_chosen"


# --- registry and secrets -------------------------------------------------------------------


def test_registry_holds_the_five_schemes_under_their_names() -> None:
    assert sorted(SCHEMES) == ["github", "shopify", "slack", "standard-webhooks", "stripe"]
    assert all(scheme.name == name for name, scheme in SCHEMES.items())


def test_default_scheme_is_standard_webhooks() -> None:
    assert get_scheme(DEFAULT_SCHEME) is SCHEMES["standard-webhooks"]


def test_get_scheme_rejects_unknown_name_with_value_error() -> None:
    with pytest.raises(ValueError, match="unknown signature scheme 'paypal'"):
        get_scheme("paypal")


def test_generated_secret_is_whsec_and_base64_of_32_random_bytes() -> None:
    secret = generate_secret()

    assert secret.startswith("whsec_")
    assert len(base64.b64decode(secret.removeprefix("whsec_"), validate=True)) == 32
    assert generate_secret() != secret


def test_generated_secret_signs_and_verifies() -> None:
    secret = generate_secret()
    headers = SCHEMES["standard-webhooks"].sign(BODY, secret, now=NOW)

    assert SCHEMES["standard-webhooks"].verify(BODY, headers, [secret], NOW).secret_index == 0


def test_verified_is_immutable() -> None:
    result = verify("github", signed("github"))

    with pytest.raises(FrozenInstanceError):
        result.secret_index = 3  # type: ignore[misc]


@pytest.mark.parametrize(
    ("error", "reason"),
    [
        (MissingHeader("x"), "missing_header"),
        (MalformedHeader("x"), "malformed_header"),
        (StaleTimestamp("x"), "stale_timestamp"),
        (BadSignature("x"), "bad_signature"),
    ],
)
def test_every_rejection_is_a_signature_error_with_a_stable_reason(error: SignatureError, reason: str) -> None:
    assert isinstance(error, SignatureError)
    assert error.reason == reason


# --- properties -----------------------------------------------------------------------------

schemes = st.sampled_from(ALL)
bodies = st.binary(max_size=512)
header_junk = st.one_of(
    st.text(max_size=80),
    st.text(alphabet="v01at=,. sha256:+/=-_é\x00", max_size=80),
    st.from_regex(r"(t=\d{0,12},)?(v[01]a?[=,][0-9a-fA-F+/=]{0,70} ?){0,3}", fullmatch=True),
)


@settings(max_examples=100)
@given(name=schemes, body=bodies)
def test_sign_then_verify_round_trips_any_body(name: str, body: bytes) -> None:
    assert verify(name, signed(name, body), body=body).secret_index == 0


@settings(max_examples=100)
@given(name=schemes, body=bodies.filter(bool), data=st.data())
def test_changing_any_single_body_byte_breaks_the_signature(name: str, body: bytes, data: st.DataObject) -> None:
    position = data.draw(st.integers(0, len(body) - 1))
    replacement = data.draw(st.integers(0, 255).filter(lambda b: b != body[position]))
    tampered = body[:position] + bytes([replacement]) + body[position + 1 :]

    with pytest.raises(BadSignature):
        verify(name, signed(name, body), body=tampered)


@settings(max_examples=100)
@given(name=schemes, body=bodies, data=st.data())
def test_garbage_header_values_only_ever_raise_signature_errors(name: str, body: bytes, data: st.DataObject) -> None:
    headers = signed(name, body)
    all_names = sorted({h for names in REQUIRED_HEADERS.values() for h in names} | {"svix-id"})
    for header in data.draw(st.sets(st.sampled_from(all_names), min_size=1)):
        headers[header] = data.draw(header_junk)

    with contextlib.suppress(SignatureError):
        SCHEMES[name].verify(body, headers, [current(name), previous(name)], NOW)
