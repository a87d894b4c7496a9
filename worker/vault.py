"""Loading credentials by id, refreshing OAuth2 access tokens before they expire.

Refreshes are serialised across every process by a row lock on the credential: the first
caller refreshes, the others wait on the lock, see a fresh expiry and use the new token.
A dead grant (`invalid_grant`) marks the credential `needs_reconnect` and pauses the Gmail
triggers reading its mailbox; the owner sees that status in the API.

    VaultError
     ├── CredentialNotFound     no such credential for this owner
     ├── CredentialUnusable     needs_reconnect / revoked, or the wrong provider
     └── RefreshUnavailable     the provider could not be reached; try again later
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

import asyncpg
import httpx

from oauth.crypto import Keyring
from oauth.google import GoogleOAuth, InvalidGrant, OAuthFlowError
from schemas.errors import NotFound
from schemas.store import credentials as store
from schemas.store.credentials import Credential

log = logging.getLogger(__name__)

# Refresh this long before expiry, so a token never expires in the middle of a call.
REFRESH_LEEWAY = timedelta(seconds=120)


class VaultError(Exception):
    """A credential cannot be used; the message is safe to show to its owner."""


class CredentialNotFound(VaultError):
    """No credential with this id belongs to the owner."""


class CredentialUnusable(VaultError):
    """The credential exists but cannot be used as asked."""


class RefreshUnavailable(VaultError):
    """The provider's token endpoint failed; a later attempt may succeed."""


@dataclass(frozen=True)
class Loaded:
    """A usable credential with its decrypted secret fields."""

    id: UUID
    provider: str
    account_email: str | None
    secret: dict[str, Any] = field(repr=False)


@dataclass
class Vault:
    """Reads and refreshes credentials. One per process; safe to share between tasks."""

    pool: asyncpg.Pool
    keyring: Keyring
    http: httpx.AsyncClient
    google: GoogleOAuth | None = None
    # Told the provider of every failed refresh (the worker counts them in its metrics).
    on_refresh_failure: Callable[[str], None] | None = None

    async def load(self, owner_id: UUID, credential_id: UUID, providers: Collection[str] = ()) -> Loaded:
        """The owner's credential, with a fresh access token for OAuth2 ones."""
        try:
            async with self.pool.acquire() as conn:
                row, secret = await store.load_secret(conn, self.keyring, owner_id, credential_id)
        except NotFound:
            raise CredentialNotFound(f"credential {credential_id} not found") from None
        _check_usable(row, providers)
        if row.kind == "oauth2" and _due(row.expires_at):
            return await self._refresh(owner_id, credential_id, providers)
        return Loaded(row.id, row.provider, row.account_email, secret)

    async def _refresh(self, owner_id: UUID, credential_id: UUID, providers: Collection[str]) -> Loaded:
        dead: str | None = None
        async with self.pool.acquire() as conn, conn.transaction():
            try:
                row, secret = await store.load_secret(conn, self.keyring, owner_id, credential_id, for_update=True)
            except NotFound:
                raise CredentialNotFound(f"credential {credential_id} not found") from None
            _check_usable(row, providers)
            if not _due(row.expires_at):  # another process refreshed while we waited
                return Loaded(row.id, row.provider, row.account_email, secret)
            client = self._client_for(row.provider)
            refresh_token = secret.get("refresh_token")
            try:
                if not refresh_token:
                    raise InvalidGrant("no refresh token was granted: reconnect the account")
                tokens = await client.refresh(self.http, str(refresh_token))
            except InvalidGrant as exc:
                self._refresh_failed(row.provider)
                dead = str(exc)
                paused = await store.mark_needs_reconnect(conn, owner_id, credential_id, dead)
                log.warning("credential %s needs reconnecting; paused %d workflow(s)", credential_id, paused)
            except OAuthFlowError as exc:
                self._refresh_failed(row.provider)
                raise RefreshUnavailable(f"could not refresh credential {credential_id}: {exc}") from None
            else:
                merged = secret | tokens.secret()
                await store.store_refreshed(conn, self.keyring, owner_id, credential_id, merged, tokens.expires_at)
                return Loaded(row.id, row.provider, row.account_email, merged)
        # Raised after the commit, so the needs_reconnect mark is kept.
        raise CredentialUnusable(f"credential {credential_id} needs to be reconnected: {dead}")

    def _refresh_failed(self, provider: str) -> None:
        if self.on_refresh_failure is not None:
            self.on_refresh_failure(provider)

    def _client_for(self, provider: str) -> GoogleOAuth:
        if provider == "google" and self.google is not None:
            return self.google
        raise RefreshUnavailable(f"no OAuth client is configured for provider {provider!r}")


def _due(expires_at: datetime | None) -> bool:
    return expires_at is not None and expires_at - REFRESH_LEEWAY <= datetime.now(UTC)


def _check_usable(row: Credential, providers: Collection[str]) -> None:
    if providers and row.provider not in providers:
        raise CredentialUnusable(
            f"credential {row.id} is for {row.provider}, expected {' or '.join(sorted(providers))}"
        )
    if row.status != "active":
        raise CredentialUnusable(f"credential {row.id} is {row.status}: reconnect it")
