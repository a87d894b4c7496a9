"""Envelope encryption of secrets at rest with AES-256-GCM.

Each secret gets its own random data key (DEK). The DEK encrypts the secret; a master key (KEK)
from the keyring wraps the DEK. Both layers authenticate the caller's associated data, which
names the row and column the ciphertext belongs to, so a ciphertext copied elsewhere fails to
decrypt. Rotating master keys only re-wraps DEKs.

Token format (text, safe for a `text` column)::

    v1.<kek_id>.<b64url(nonce_k || wrapped_dek)>.<b64url(nonce_d || ciphertext)>

    CryptoError
     ├── UnknownKey      the token names a key id the keyring does not hold
     └── DecryptionFailed wrong key, wrong associated data, or a damaged token
"""

from __future__ import annotations

import base64
import os
from collections.abc import Iterable

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from schemas.sealed import SealError

_VERSION = "v1"


class CryptoError(SealError):
    """A secret could not be encrypted or decrypted."""


class UnknownKey(CryptoError):
    """The ciphertext was made with a master key this keyring does not have."""


class DecryptionFailed(CryptoError):
    """Authentication failed: wrong key, wrong associated data or a damaged ciphertext."""


def _b64e(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _b64d(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def generate_key() -> bytes:
    """A new random 256-bit master key."""
    return AESGCM.generate_key(bit_length=256)


class Keyring:
    """Master keys by id; the primary encrypts, every key can decrypt."""

    def __init__(self, keys: Iterable[tuple[str, bytes]]) -> None:
        ordered = list(keys)
        if not ordered:
            raise CryptoError("the keyring needs at least one master key")
        self.primary_id = ordered[0][0]
        self._keys = {kid: AESGCM(key) for kid, key in ordered}
        self._raw = dict(ordered)

    @property
    def key_ids(self) -> list[str]:
        """Every key id held, primary first."""
        return list(self._keys)

    def derive(self, purpose: str, kid: str | None = None) -> bytes:
        """A 256-bit sub-key of one master key (the primary by default) for one purpose.

        A master key wraps data keys; anything else (signing links, Temporal payloads) uses a
        derived key, so no key serves two purposes.
        """
        key_id = self.primary_id if kid is None else kid
        if key_id not in self._raw:
            raise UnknownKey(f"master key {key_id!r} is not in the keyring")
        hkdf = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=f"hookyard|{purpose}".encode())
        return hkdf.derive(self._raw[key_id])

    def encrypt(self, plaintext: bytes, aad: bytes) -> str:
        """Encrypt under a fresh data key wrapped by the primary master key."""
        dek = AESGCM.generate_key(bit_length=256)
        nonce_d, nonce_k = os.urandom(12), os.urandom(12)
        body = nonce_d + AESGCM(dek).encrypt(nonce_d, plaintext, aad)
        wrap_aad = self.primary_id.encode() + b"|" + aad
        wrapped = nonce_k + self._keys[self.primary_id].encrypt(nonce_k, dek, wrap_aad)
        return ".".join((_VERSION, self.primary_id, _b64e(wrapped), _b64e(body)))

    def decrypt(self, token: str, aad: bytes) -> bytes:
        """Decrypt a token made by `encrypt` with the same associated data."""
        dek = self._unwrap(token, aad)
        body = _b64d(token.rsplit(".", 1)[1])
        try:
            return AESGCM(dek).decrypt(body[:12], body[12:], aad)
        except InvalidTag as exc:
            raise DecryptionFailed("secret does not belong to this record") from exc

    def key_id_of(self, token: str) -> str:
        """The master key id a token was wrapped with (to find what needs rotating)."""
        return self._split(token)[1]

    def rewrap(self, token: str, aad: bytes) -> str:
        """The same secret, its data key re-wrapped under the primary master key."""
        return self.encrypt(self.decrypt(token, aad), aad)

    def _unwrap(self, token: str, aad: bytes) -> bytes:
        _, kid, wrapped_b64, _ = self._split(token)
        kek = self._keys.get(kid)
        if kek is None:
            raise UnknownKey(f"master key {kid!r} is not in the keyring")
        wrapped = _b64d(wrapped_b64)
        try:
            return kek.decrypt(wrapped[:12], wrapped[12:], kid.encode() + b"|" + aad)
        except InvalidTag as exc:
            raise DecryptionFailed("secret does not belong to this record") from exc

    @staticmethod
    def _split(token: str) -> tuple[str, str, str, str]:
        parts = token.split(".")
        if len(parts) != 4 or parts[0] != _VERSION:
            raise DecryptionFailed("not a hookyard ciphertext")
        return parts[0], parts[1], parts[2], parts[3]
