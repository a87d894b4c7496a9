"""Google's OAuth2 endpoints: authorization URL (PKCE S256), code exchange, refresh, revoke.

Authlib provides the protocol pieces (PKCE challenge, grant URI, tokens); HTTP goes through
the service's own httpx client, so timeouts and test stand-ins are the same as everywhere.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import orjson
from authlib.common.security import generate_token
from authlib.oauth2.rfc6749.parameters import prepare_grant_uri
from authlib.oauth2.rfc7636 import create_s256_code_challenge

from settings import GoogleSettings

AUTHORIZE_URL = "https://accounts.google.com/o/oauth2/v2/auth"
TOKEN_URL = "https://oauth2.googleapis.com/token"  # noqa: S105 - a URL, not a secret
REVOKE_URL = "https://oauth2.googleapis.com/revoke"

DEFAULT_SCOPES = ("openid", "email", "https://www.googleapis.com/auth/gmail.modify")


class OAuthFlowError(Exception):
    """The provider refused or the exchange failed; the message is safe to show."""


class InvalidGrant(OAuthFlowError):
    """The refresh token no longer works (revoked, expired, password change, token limit)."""


class ProviderUnavailable(OAuthFlowError):
    """The provider could not be reached or answered 5xx; try again later."""


@dataclass(frozen=True)
class GoogleOAuth:
    """A configured Google OAuth client (URLs overridable for tests and stand-ins)."""

    client_id: str
    client_secret: str = field(repr=False)
    redirect_uri: str
    authorize_url: str = AUTHORIZE_URL
    token_url: str = TOKEN_URL
    revoke_url: str = REVOKE_URL

    def authorization_url(
        self, scopes: list[str], state: str, code_verifier: str, login_hint: str | None = None
    ) -> str:
        """Where to send the browser: offline access, consent prompt, PKCE S256 (and the
        account to sign in with, when the link is for one)."""
        extra = {} if login_hint is None else {"login_hint": login_hint}
        url: str = prepare_grant_uri(
            self.authorize_url,
            self.client_id,
            "code",
            redirect_uri=self.redirect_uri,
            scope=" ".join(scopes),
            state=state,
            code_challenge=create_s256_code_challenge(code_verifier),  # type: ignore[no-untyped-call]
            code_challenge_method="S256",
            access_type="offline",
            # A refresh token comes only with a consent; ask every time so reconnects get one.
            prompt="consent",
            include_granted_scopes="true",
            **extra,
        )
        return url

    async def exchange_code(self, http: httpx.AsyncClient, code: str, code_verifier: str) -> Tokens:
        """Trade an authorization code (and the PKCE verifier) for tokens."""
        data = {
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": self.redirect_uri,
            "code_verifier": code_verifier,
        }
        return await self._token_request(http, data)

    async def refresh(self, http: httpx.AsyncClient, refresh_token: str) -> Tokens:
        """New access token from a refresh token; raises `InvalidGrant` if it is dead."""
        return await self._token_request(http, {"grant_type": "refresh_token", "refresh_token": refresh_token})

    async def revoke(self, http: httpx.AsyncClient, token: str) -> None:
        """Revoke a token at Google (the token goes in the body, never the URL)."""
        try:
            response = await http.post(self.revoke_url, data={"token": token}, timeout=10.0)
        except httpx.HTTPError as exc:
            raise ProviderUnavailable(f"Google revocation unreachable ({type(exc).__name__})") from exc
        # 400 invalid_token: already revoked or expired, which is what we wanted.
        if response.status_code >= 500:
            raise ProviderUnavailable(f"Google revocation answered {response.status_code}")

    async def _token_request(self, http: httpx.AsyncClient, data: dict[str, str]) -> Tokens:
        try:
            response = await http.post(
                self.token_url,
                data=data,
                auth=(self.client_id, self.client_secret),
                headers={"Accept": "application/json"},
                timeout=15.0,
            )
        except httpx.HTTPError as exc:
            raise ProviderUnavailable(f"Google token endpoint unreachable ({type(exc).__name__})") from exc
        if response.status_code >= 500:
            raise ProviderUnavailable(f"Google token endpoint answered {response.status_code}")
        try:
            body: dict[str, Any] = response.json()
        except ValueError:
            body = {}
        if response.status_code != 200 or "access_token" not in body:
            error = str(body.get("error") or f"http_{response.status_code}")
            if error == "invalid_grant":
                raise InvalidGrant("Google refused the grant (invalid_grant): reconnect the account")
            raise OAuthFlowError(f"Google token request failed: {error}")
        return Tokens.from_response(body)


@dataclass(frozen=True)
class Tokens:
    """A token response. `email` comes from the ID token, which the TLS channel vouches for."""

    access_token: str = field(repr=False)
    refresh_token: str | None = field(repr=False)
    expires_at: datetime | None
    scopes: list[str]
    email: str | None

    @classmethod
    def from_response(cls, body: dict[str, Any]) -> Tokens:
        """Parse Google's token JSON."""
        expires_in = body.get("expires_in")
        expires_at = datetime.now(UTC) + timedelta(seconds=int(expires_in)) if expires_in else None
        scope = body.get("scope")
        return cls(
            access_token=str(body["access_token"]),
            refresh_token=body.get("refresh_token"),
            expires_at=expires_at,
            scopes=str(scope).split() if scope else [],
            email=_id_token_email(body.get("id_token")),
        )

    def secret(self) -> dict[str, str]:
        """The fields stored encrypted."""
        fields = {"access_token": self.access_token}
        if self.refresh_token:
            fields["refresh_token"] = self.refresh_token
        return fields


def _id_token_email(id_token: object) -> str | None:
    # The ID token came straight from Google's token endpoint over TLS, so its claims can be
    # read without verifying the signature (OpenID Connect Core §3.1.3.7, item 6).
    if not isinstance(id_token, str) or id_token.count(".") != 2:
        return None
    payload = id_token.split(".")[1]
    try:
        claims = orjson.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    except ValueError:
        return None
    if not isinstance(claims, dict) or claims.get("email_verified") is not True:
        return None  # an unverified address must not name a mailbox (pushes are routed by it)
    email = claims.get("email")
    return email if isinstance(email, str) else None


def new_pkce_verifier() -> str:
    """A high-entropy PKCE code verifier (RFC 7636: 43-128 characters)."""
    token: str = generate_token(64)
    return token


def new_state() -> str:
    """A one-time `state` value."""
    token: str = generate_token(40)
    return token


def google_from_settings(settings: GoogleSettings) -> GoogleOAuth | None:
    """The configured Google client, or None when no client id is set."""
    if not settings.client_id:
        return None
    return GoogleOAuth(
        client_id=settings.client_id,
        client_secret=settings.client_secret,
        redirect_uri=settings.redirect_uri,
        authorize_url=settings.authorize_url,
        token_url=settings.token_url,
        revoke_url=settings.revoke_url,
    )
