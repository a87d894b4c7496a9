"""Temporal payload encryption: AES-256-GCM under keys derived from the master keyring."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from hypothesis import given
from hypothesis import strategies as st
from temporalio.api.common.v1 import Payload
from temporalio.api.failure.v1 import Failure
from temporalio.exceptions import ApplicationError

from oauth.crypto import CryptoError, DecryptionFailed, UnknownKey, generate_key
from runtime.codec import ENCODING, KEY_ID_KEY, EncryptionCodec, encrypted_data_converter, payload_key

OLD, NEW = ("old", generate_key()), ("new", generate_key())


def json_payload(text: str) -> Payload:
    return Payload(metadata={"encoding": b"json/plain"}, data=f'"{text}"'.encode())


async def test_decode_returns_exactly_what_was_encoded() -> None:
    codec = EncryptionCodec([NEW])
    originals = [json_payload("order A-1"), Payload(metadata={"encoding": b"binary/null"})]
    assert await codec.decode(await codec.encode(originals)) == originals


async def test_encoded_payload_is_marked_encrypted_names_its_key_and_hides_the_data() -> None:
    codec = EncryptionCodec([NEW, OLD])
    [encoded] = await codec.encode([json_payload("topsecret-marker")])
    assert dict(encoded.metadata) == {"encoding": ENCODING, KEY_ID_KEY: b"new"}
    assert b"topsecret-marker" not in encoded.SerializeToString()
    assert b"json/plain" not in encoded.SerializeToString()  # the inner metadata is hidden too


def test_same_payload_encrypts_differently_each_time() -> None:
    codec = EncryptionCodec([NEW])
    first, second = codec.encrypt(json_payload("x")), codec.encrypt(json_payload("x"))
    assert first.data[:12] != second.data[:12]  # fresh 96-bit nonce
    assert first.data != second.data


@pytest.mark.parametrize("position", [0, 12, -1])
def test_tampered_ciphertext_fails_authentication(position: int) -> None:
    codec = EncryptionCodec([NEW])
    encoded = codec.encrypt(json_payload("amount=100"))
    data = bytearray(encoded.data)
    data[position] ^= 0x01
    tampered = Payload(metadata=dict(encoded.metadata), data=bytes(data))
    with pytest.raises(DecryptionFailed, match="failed authentication"):
        codec.decrypt(tampered)


def test_truncated_ciphertext_fails_clearly() -> None:
    codec = EncryptionCodec([NEW])
    encoded = codec.encrypt(json_payload("x"))
    with pytest.raises(DecryptionFailed, match="too short"):
        codec.decrypt(Payload(metadata=dict(encoded.metadata), data=encoded.data[:20]))


def test_relabelled_key_id_does_not_decrypt() -> None:
    codec = EncryptionCodec([NEW, OLD])
    encoded = codec.encrypt(json_payload("x"))
    relabelled = Payload(metadata={**dict(encoded.metadata), KEY_ID_KEY: b"old"}, data=encoded.data)
    with pytest.raises(DecryptionFailed):
        codec.decrypt(relabelled)


def test_unknown_key_id_fails_naming_the_key() -> None:
    encoded = EncryptionCodec([OLD]).encrypt(json_payload("x"))
    with pytest.raises(UnknownKey, match=r"'old'.*HOOKYARD_MASTER_KEYS"):
        EncryptionCodec([NEW]).decrypt(encoded)


async def test_payload_from_the_old_primary_decodes_once_it_is_a_secondary_key() -> None:
    [before_rotation] = await EncryptionCodec([OLD]).encode([json_payload("in flight")])
    rotated = EncryptionCodec([NEW, OLD])
    assert await rotated.decode([before_rotation]) == [json_payload("in flight")]
    [after_rotation] = await rotated.encode([json_payload("new work")])
    assert after_rotation.metadata[KEY_ID_KEY] == b"new"


async def test_payloads_written_before_encryption_pass_through_decode() -> None:
    plain = json_payload("written by an older release")
    assert await EncryptionCodec([NEW]).decode([plain]) == [plain]


def test_payload_key_is_derived_not_the_master_key_itself() -> None:
    kid, master = NEW
    assert payload_key(master) == payload_key(master)
    assert payload_key(master) != master
    encoded = EncryptionCodec([NEW]).encrypt(json_payload("x"))
    with pytest.raises(Exception):  # noqa: B017 - any failure: the master key must not open it
        AESGCM(master).decrypt(encoded.data[:12], encoded.data[12:], b"hookyard temporal payload|" + kid.encode())


def test_a_codec_without_keys_is_refused() -> None:
    with pytest.raises(CryptoError):
        EncryptionCodec([])


@given(
    data=st.binary(max_size=2048),
    metadata=st.dictionaries(st.text(min_size=1, max_size=20), st.binary(max_size=64), max_size=4),
)
def test_any_bytes_and_metadata_round_trip(data: bytes, metadata: dict[str, bytes]) -> None:
    codec = EncryptionCodec([NEW, OLD])
    original = Payload(metadata=metadata, data=data)
    encoded = codec.encrypt(original)
    assert encoded.metadata["encoding"] == ENCODING
    assert codec.decrypt(encoded) == original


async def test_converter_encrypts_values_and_reads_them_back() -> None:
    converter = encrypted_data_converter([NEW])
    payloads = await converter.encode([{"email": "someone@example.com"}])
    assert payloads[0].metadata["encoding"] == ENCODING
    assert b"someone@example.com" not in payloads[0].SerializeToString()
    assert await converter.decode(payloads, [dict]) == [{"email": "someone@example.com"}]


async def test_converter_encrypts_failure_messages_and_stack_traces() -> None:
    converter = encrypted_data_converter([NEW])
    try:
        raise ApplicationError("token sk_live_marker was rejected", type="PermanentActionError")
    except ApplicationError as exc:
        failure = Failure()
        await converter.encode_failure(exc, failure)
    wire = failure.SerializeToString()
    assert b"sk_live_marker" not in wire
    assert b"test_codec" not in wire  # the stack trace names this file
    assert failure.message == "Encoded failure"
    decoded = await converter.decode_failure(failure)
    assert "sk_live_marker" in str(decoded)
