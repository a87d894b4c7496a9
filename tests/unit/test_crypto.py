"""Secrets at rest: envelope AES-GCM bound to its row."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from oauth.crypto import DecryptionFailed, Keyring, UnknownKey, generate_key
from schemas.sealed import record_aad

AAD = record_aad("endpoint_secrets", "owner-1", "row-1", "ciphertext")


@given(st.binary(max_size=512))
def test_round_trip_returns_the_plaintext(secret: bytes) -> None:
    ring = Keyring([("k1", generate_key())])
    assert ring.decrypt(ring.encrypt(secret, AAD), AAD) == secret


def test_ciphertext_moved_to_another_row_does_not_decrypt() -> None:
    ring = Keyring([("k1", generate_key())])
    token = ring.encrypt(b"whsec_abc", AAD)
    with pytest.raises(DecryptionFailed):
        ring.decrypt(token, record_aad("endpoint_secrets", "owner-2", "row-1", "ciphertext"))


def test_same_secret_encrypts_differently_each_time() -> None:
    ring = Keyring([("k1", generate_key())])
    assert ring.encrypt(b"s", AAD) != ring.encrypt(b"s", AAD)


def test_token_names_its_key_and_holds_no_plaintext() -> None:
    ring = Keyring([("k1", generate_key())])
    token = ring.encrypt(b"whsec_topsecret", AAD)
    assert ring.key_id_of(token) == "k1"
    assert "topsecret" not in token


def test_older_keys_still_decrypt_and_rewrap_moves_to_the_primary() -> None:
    key1, key2 = generate_key(), generate_key()
    token = Keyring([("k1", key1)]).encrypt(b"s", AAD)
    rotated = Keyring([("k2", key2), ("k1", key1)])
    assert rotated.decrypt(token, AAD) == b"s"
    rewrapped = rotated.rewrap(token, AAD)
    assert rotated.key_id_of(rewrapped) == "k2"
    assert Keyring([("k2", key2)]).decrypt(rewrapped, AAD) == b"s"


def test_unknown_key_id_is_reported() -> None:
    token = Keyring([("k1", generate_key())]).encrypt(b"s", AAD)
    with pytest.raises(UnknownKey):
        Keyring([("k9", generate_key())]).decrypt(token, AAD)


def test_tampered_token_fails() -> None:
    ring = Keyring([("k1", generate_key())])
    token = ring.encrypt(b"secret", AAD)
    head, body = token.rsplit(".", 1)
    flipped = body[:-2] + ("A" if body[-2] != "A" else "B") + body[-1]
    with pytest.raises(DecryptionFailed):
        ring.decrypt(f"{head}.{flipped}", AAD)
