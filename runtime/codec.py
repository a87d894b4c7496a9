"""Encryption of every Temporal payload, so the Temporal server and its operators see no data.

Workflow and activity arguments, results, signals, memos and (through the failure converter)
failure messages and stack traces are encrypted with AES-256-GCM before they leave the process.
Each payload becomes::

    metadata: {"encoding": "binary/encrypted", "encryption-key-id": <master key id>}
    data:     nonce (12 random bytes) || AES-GCM(serialized original payload) || tag (16 bytes)

The key is not the master key itself but one derived from it with HKDF (info
b"hookyard temporal payloads"), so no key serves two purposes. The primary master key
encrypts; every master key in the keyring decrypts, so rotating keys never strands a running
workflow. The key id is authenticated as associated data.

Payloads without the encrypted encoding pass through `decode` unchanged: histories written
before encryption was turned on stay readable.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterable, Sequence

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from temporalio.api.common.v1 import Payload
from temporalio.converter import DataConverter, DefaultFailureConverterWithEncodedAttributes, PayloadCodec

from oauth.crypto import CryptoError, DecryptionFailed, UnknownKey

ENCODING = b"binary/encrypted"
KEY_ID_KEY = "encryption-key-id"
_HKDF_INFO = b"hookyard temporal payloads"
_NONCE_BYTES = 12
_TAG_BYTES = 16


def payload_key(master_key: bytes) -> bytes:
    """The payload-encryption key derived from one master key."""
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_HKDF_INFO).derive(master_key)


def _aad(key_id: str) -> bytes:
    return b"hookyard temporal payload|" + key_id.encode()


class EncryptionCodec(PayloadCodec):
    """AES-256-GCM payload codec over the master keyring; the first key is the primary."""

    def __init__(self, master_keys: Iterable[tuple[str, bytes]]) -> None:
        keys = list(master_keys)
        if not keys:
            raise CryptoError("payload encryption needs at least one master key")
        self.primary_id = keys[0][0]
        self._ciphers = {kid: AESGCM(payload_key(key)) for kid, key in keys}

    async def encode(self, payloads: Sequence[Payload]) -> list[Payload]:
        """Encrypt each payload under the primary key."""
        return [self.encrypt(p) for p in payloads]

    async def decode(self, payloads: Sequence[Payload]) -> list[Payload]:
        """Decrypt each encrypted payload with the key its metadata names."""
        return [self.decrypt(p) for p in payloads]

    def encrypt(self, payload: Payload) -> Payload:
        """One payload, encrypted under the primary key with a fresh random nonce."""
        nonce = os.urandom(_NONCE_BYTES)
        sealed = self._ciphers[self.primary_id].encrypt(nonce, payload.SerializeToString(), _aad(self.primary_id))
        return Payload(metadata={"encoding": ENCODING, KEY_ID_KEY: self.primary_id.encode()}, data=nonce + sealed)

    def decrypt(self, payload: Payload) -> Payload:
        """The original payload; raises UnknownKey or DecryptionFailed if it cannot be had."""
        if payload.metadata.get("encoding") != ENCODING:
            return payload
        key_id = payload.metadata.get(KEY_ID_KEY, b"").decode(errors="replace")
        cipher = self._ciphers.get(key_id)
        if cipher is None:
            raise UnknownKey(
                f"Temporal payload was encrypted with master key {key_id!r}, which is not in "
                "HOOKYARD_MASTER_KEYS; add it back as a secondary key"
            )
        data = payload.data
        if len(data) < _NONCE_BYTES + _TAG_BYTES:
            raise DecryptionFailed("Temporal payload is too short to be a hookyard ciphertext")
        try:
            plaintext = cipher.decrypt(data[:_NONCE_BYTES], data[_NONCE_BYTES:], _aad(key_id))
        except InvalidTag as exc:
            raise DecryptionFailed(
                f"Temporal payload failed authentication under master key {key_id!r} (damaged or altered)"
            ) from exc
        original = Payload()
        original.ParseFromString(plaintext)
        return original


def encrypted_data_converter(master_keys: Iterable[tuple[str, bytes]]) -> DataConverter:
    """The SDK's default converter plus encryption of payloads and of failure messages."""
    return dataclasses.replace(
        DataConverter.default,
        payload_codec=EncryptionCodec(master_keys),
        # Without this, failure messages and stack traces are stored in plain text.
        failure_converter_class=DefaultFailureConverterWithEncodedAttributes,
    )
