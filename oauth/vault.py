"""Loading credentials by id, refreshing OAuth2 access tokens, and the one rule for a token a
provider refuses.

Refreshes are serialised across every process by a row lock on the credential: the first
caller refreshes, the others wait on the lock, see a fresh expiry and use the new token.

Every call to an OAuth2 provider's API goes through `Vault.call`, whatever the provider or the
caller (an action, the mailbox sync, a watch renewal): a 401 (`TokenRejected`) to a token
hookyard believed valid forces one refresh, under the row lock (callers that hit the same
401 together share it: whoever finds the stored token already replaced uses the new one),
and the call is made once more. The grant is dead, and the credential marked
`needs_reconnect` with a reason, when that refresh answers `invalid_grant` or the retried
call gets a 401 again (`revoked`), or the provider says the grant lacks scopes
(`ScopesMissing`, `scopes_missing`). Marking pauses the Gmail triggers reading that mailbox
and cancels their queued executions (schemas/store/credentials.py); reconnecting resumes them.

    VaultError
     ├── CredentialNotFound     no such credential for this owner
     ├── CredentialUnusable     needs_reconnect / revoked, or the wrong provider
     └── RefreshUnavailable     the provider could not be reached; try again later
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Collection
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar
from uuid import UUID

import asyncpg
import httpx

from oauth.crypto import Keyring
from oauth.google import DEFAULT_SCOPES, GoogleOAuth, InvalidGrant, OAuthFlowError
from schemas.errors import NotFound
from schemas.store import credentials as store
from schemas.store.credentials import Credential

log = logging.getLogger(__name__)

T = TypeVar("T")

# Why a credential needs reconnecting (the start of its `status_reason`).
REVOKED = "revoked"
SCOPES_MISSING = "scopes_missing"

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


class TokenRejected(Exception):
    """Raised by a provider client: the API answered 401 to the access token."""


class ScopesMissing(Exception):
    """Raised by a provider client: the API answered 403 because the grant lacks a scope."""


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
    # How long the connect link sent with credential.needs_reconnect stays valid.
    connect_link_ttl_s: int = store.DEFAULT_LINK_TTL_S

    async def load(self, owner_id: UUID, credential_id: UUID, providers: Collection[str] = ()) -> Loaded:
        """The owner's credential, with a fresh access token for OAuth2 ones."""
        async with self.pool.acquire() as conn:
            try:
                row, secret = await store.load_secret(conn, self.keyring, owner_id, credential_id)
            except NotFound:
                raise CredentialNotFound(f"credential {credential_id} not found") from None
        _check_usable(row, providers)
        if row.kind == "oauth2" and _due(row.expires_at):
            return await self._refresh(owner_id, credential_id, providers)
        return Loaded(row.id, row.provider, row.account_email, secret)

    def grant(self, owner_id: UUID, credential_id: UUID, providers: Collection[str] = ()) -> Grant:
        """A credential to make a series of provider calls with, under the 401 rule."""
        return Grant(self, owner_id, credential_id, tuple(providers))

    async def call(
        self,
        owner_id: UUID,
        credential_id: UUID,
        providers: Collection[str],
        use: Callable[[Loaded], Awaitable[T]],
    ) -> T:
        """Run one provider call with the credential, under the 401 rule (see `Grant.call`)."""
        return await self.grant(owner_id, credential_id, providers).call(use)

    async def _dead(self, owner_id: UUID, credential_id: UUID, reason: str) -> CredentialUnusable:
        """Mark the grant dead (once, however many callers find out) and say so to the caller."""
        async with self.pool.acquire() as conn:
            paused = await self._mark(conn, owner_id, credential_id, reason)
        if paused is not None:
            log.warning(
                "credential %s needs reconnecting (%s); paused %d workflow(s)",
                credential_id,
                reason.split(":", 1)[0],
                len(paused),
            )
        return CredentialUnusable(f"credential {credential_id} needs to be reconnected ({reason})")

    async def _mark(
        self, conn: asyncpg.Connection, owner_id: UUID, credential_id: UUID, reason: str
    ) -> list[UUID] | None:
        # The owner is notified in the same transaction, with a link asking for the usual scopes too.
        return await store.mark_needs_reconnect(
            conn, owner_id, credential_id, reason, link_ttl_s=self.connect_link_ttl_s, link_scopes=DEFAULT_SCOPES
        )

    async def _refresh(
        self, owner_id: UUID, credential_id: UUID, providers: Collection[str], *, stale: str | None = None
    ) -> Loaded:
        """Refresh under the row lock: when due, or (`stale`) when that token was refused and
        no other caller has replaced it meanwhile."""
        dead: str | None = None
        async with self.pool.acquire() as conn, conn.transaction():
            try:
                row, secret = await store.load_secret(conn, self.keyring, owner_id, credential_id, for_update=True)
            except NotFound:
                raise CredentialNotFound(f"credential {credential_id} not found") from None
            _check_usable(row, providers)
            # Another process refreshed while we waited (or, for a refused token, already replaced it).
            done = secret.get("access_token") != stale if stale is not None else not _due(row.expires_at)
            if done:
                return Loaded(row.id, row.provider, row.account_email, secret)
            client = self._client_for(row.provider)
            refresh_token = secret.get("refresh_token")
            try:
                if not refresh_token:
                    raise InvalidGrant("no refresh token was granted: reconnect the account")
                tokens = await client.refresh(self.http, str(refresh_token))
            except InvalidGrant as exc:
                self._refresh_failed(row.provider)
                dead = f"{REVOKED}: {exc}"
                paused = await self._mark(conn, owner_id, credential_id, dead)
                if paused is not None:
                    log.warning(
                        "credential %s needs reconnecting (%s); paused %d workflow(s)",
                        credential_id,
                        REVOKED,
                        len(paused),
                    )
            except OAuthFlowError as exc:
                self._refresh_failed(row.provider)
                raise RefreshUnavailable(f"could not refresh credential {credential_id}: {exc}") from None
            else:
                merged = secret | tokens.secret()
                await store.store_refreshed(conn, self.keyring, owner_id, credential_id, merged, tokens.expires_at)
                return Loaded(row.id, row.provider, row.account_email, merged)
        # Raised after the commit, so the needs_reconnect mark is kept.
        raise CredentialUnusable(f"credential {credential_id} needs to be reconnected ({dead})")

    def _refresh_failed(self, provider: str) -> None:
        if self.on_refresh_failure is not None:
            self.on_refresh_failure(provider)

    def _client_for(self, provider: str) -> GoogleOAuth:
        if provider == "google" and self.google is not None:
            return self.google
        raise RefreshUnavailable(f"no OAuth client is configured for provider {provider!r}")


@dataclass
class Grant:
    """One credential used for a series of provider calls: loaded once, then refreshed only by
    the 401 rule. Safe to share between the concurrent calls of one task."""

    vault: Vault
    owner_id: UUID
    credential_id: UUID
    providers: tuple[str, ...] = ()
    _loaded: Loaded | None = field(default=None, repr=False)

    async def call(self, use: Callable[[Loaded], Awaitable[T]]) -> T:
        """Run one provider call with the credential (see the module doc for the rule).

        `use` raises `TokenRejected` on a 401 and `ScopesMissing` on a 403 for missing scopes;
        it may run twice (the second time with a refreshed token), so it must be safe to repeat
        after a refused attempt. Raises `CredentialUnusable` once the grant is found dead.
        """
        vault = self.vault
        if self._loaded is None:
            self._loaded = await vault.load(self.owner_id, self.credential_id, self.providers)
        loaded = self._loaded
        try:
            return await use(loaded)
        except TokenRejected:
            stale = str(loaded.secret.get("access_token") or "")
        except ScopesMissing as exc:
            raise await vault._dead(self.owner_id, self.credential_id, f"{SCOPES_MISSING}: {exc}") from None
        loaded = await vault._refresh(self.owner_id, self.credential_id, self.providers, stale=stale)
        self._loaded = loaded
        try:
            return await use(loaded)
        except TokenRejected as exc:
            reason = f"{REVOKED}: a freshly refreshed token was refused too ({exc})"
            raise await vault._dead(self.owner_id, self.credential_id, reason) from None
        except ScopesMissing as exc:
            raise await vault._dead(self.owner_id, self.credential_id, f"{SCOPES_MISSING}: {exc}") from None


def _due(expires_at: datetime | None) -> bool:
    return expires_at is not None and expires_at - REFRESH_LEEWAY <= datetime.now(UTC)


def _check_usable(row: Credential, providers: Collection[str]) -> None:
    if providers and row.provider not in providers:
        raise CredentialUnusable(
            f"credential {row.id} is for {row.provider}, expected {' or '.join(sorted(providers))}"
        )
    if row.status == "needs_reconnect":
        raise CredentialUnusable(f"credential {row.id} needs to be reconnected ({row.status_reason})")
    if row.status != "active":
        raise CredentialUnusable(f"credential {row.id} is {row.status}: reconnect it")
