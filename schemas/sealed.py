"""Secrets at rest as the persistence layer sees them: sealed text bound to one row and column.

The store never encrypts by itself and never imports the crypto layer: a caller passes a
`Cipher` (in production `oauth.crypto.Keyring`), and the store seals or opens a value with the
associated data naming the row it belongs to, so a ciphertext copied to another row fails to open.
"""

from __future__ import annotations

from typing import Protocol


class SealError(Exception):
    """A sealed value cannot be opened or re-sealed (the crypto layer's errors derive from it)."""


class Cipher(Protocol):
    """Authenticated encryption of one value, bound to associated data (`oauth.crypto.Keyring`)."""

    def encrypt(self, plaintext: bytes, aad: bytes) -> str:
        """The sealed text of `plaintext`, openable only with the same `aad`."""
        ...

    def decrypt(self, token: str, aad: bytes) -> bytes:
        """The plaintext of a sealed text; raises if the token or `aad` does not match."""
        ...


class Rewrapper(Protocol):
    """Re-seals a value under the primary master key without opening it for the caller."""

    @property
    def primary_id(self) -> str:
        """The id of the key new seals are made with."""
        ...

    def rewrap(self, token: str, aad: bytes) -> str:
        """The same value sealed under the primary key; raises `SealError` if it cannot be opened."""
        ...


def record_aad(table: str, owner_id: str, row_id: str, column: str) -> bytes:
    """Associated data binding a ciphertext to one column of one owner's row."""
    return f"hookyard|{table}|{owner_id}|{row_id}|{column}".encode()
