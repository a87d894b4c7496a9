"""Credentials for one execution: the vault, scoped to the execution's owner, speaking in
action errors (a credential the owner must fix is permanent; a provider hiccup is retryable)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Collection
from typing import TypeVar
from uuid import UUID

from actions.base import Credential
from actions.errors import PermanentActionError, RetryableActionError
from oauth.vault import CredentialNotFound, CredentialUnusable, Loaded, RefreshUnavailable, Vault

T = TypeVar("T")


class OwnerCredentials:
    """A `CredentialSource` that can only see one owner's credentials."""

    def __init__(self, vault: Vault, owner_id: UUID) -> None:
        self._vault = vault
        self._owner_id = owner_id

    async def load(self, credential_id: str, providers: Collection[str]) -> Credential:
        """The decrypted credential, or an action error naming the problem (never the secret)."""
        uuid = _id(credential_id)
        try:
            loaded = await self._vault.load(self._owner_id, uuid, providers)
        except (CredentialNotFound, CredentialUnusable) as exc:
            raise PermanentActionError(str(exc)) from None
        except RefreshUnavailable as exc:
            raise RetryableActionError(str(exc)) from None
        return _credential(loaded)

    async def call(
        self, credential_id: str, providers: Collection[str], use: Callable[[Credential], Awaitable[T]]
    ) -> T:
        """One provider call under OAuth's 401 rule; a dead grant fails the execution for good."""
        uuid = _id(credential_id)

        async def with_loaded(loaded: Loaded) -> T:
            return await use(_credential(loaded))

        try:
            return await self._vault.call(self._owner_id, uuid, providers, with_loaded)
        except (CredentialNotFound, CredentialUnusable) as exc:
            raise PermanentActionError(str(exc)) from None
        except RefreshUnavailable as exc:
            raise RetryableActionError(str(exc)) from None


def _id(credential_id: str) -> UUID:
    try:
        return UUID(str(credential_id))
    except ValueError:
        raise PermanentActionError(f"credential id {credential_id!r} is not valid") from None


def _credential(loaded: Loaded) -> Credential:
    secret = {key: str(value) for key, value in loaded.secret.items()}
    return Credential(str(loaded.id), loaded.provider, secret, loaded.account_email)
