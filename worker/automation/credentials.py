"""Credentials for one execution: the vault, scoped to the execution's owner, speaking in
action errors (a credential the owner must fix is permanent; a provider hiccup is retryable)."""

from __future__ import annotations

from collections.abc import Collection
from uuid import UUID

from actions.base import Credential
from actions.errors import PermanentActionError, RetryableActionError
from worker.vault import CredentialNotFound, CredentialUnusable, RefreshUnavailable, Vault


class OwnerCredentials:
    """A `CredentialSource` that can only see one owner's credentials."""

    def __init__(self, vault: Vault, owner_id: UUID) -> None:
        self._vault = vault
        self._owner_id = owner_id

    async def load(self, credential_id: str, providers: Collection[str]) -> Credential:
        """The decrypted credential, or an action error naming the problem (never the secret)."""
        try:
            uuid = UUID(str(credential_id))
        except ValueError:
            raise PermanentActionError(f"credential id {credential_id!r} is not valid") from None
        try:
            loaded = await self._vault.load(self._owner_id, uuid, providers)
        except (CredentialNotFound, CredentialUnusable) as exc:
            raise PermanentActionError(str(exc)) from None
        except RefreshUnavailable as exc:
            raise RetryableActionError(str(exc)) from None
        secret = {key: str(value) for key, value in loaded.secret.items()}
        return Credential(str(loaded.id), loaded.provider, secret, loaded.account_email)
