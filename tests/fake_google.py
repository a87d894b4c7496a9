"""A stand-in for Google's OAuth2 endpoints (authorize, token, revoke), served locally.

It behaves like the real thing where hookyard depends on it: codes are single use and bound
to the redirect URI and PKCE challenge, refresh tokens can be made dead (`invalid_grant`),
and the ID token names the account. `revoke_account` does what an account holder's
"remove access" does: every refresh token of the account answers `invalid_grant` from then
on (a Gmail stand-in told through `listeners` also refuses its access tokens with 401).
"""

from __future__ import annotations

import base64
import hashlib
import itertools
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, urlencode

import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import Route

CLIENT_ID = "test-client.apps.googleusercontent.com"
CLIENT_SECRET = "test-client-secret"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def id_token(email: str, verified: bool = True) -> str:
    """An (unsigned) ID token; hookyard reads its claims from the token endpoint's answer."""
    header = _b64(orjson.dumps({"alg": "RS256", "kid": "test"}))
    claims = _b64(orjson.dumps({"iss": "https://accounts.google.com", "email": email, "email_verified": verified}))
    return f"{header}.{claims}.{_b64(b'sig')}"


@dataclass
class FakeGoogle:
    """State of the fake: issued codes and tokens, and what was asked of it."""

    email: str = "boss@example.com"
    email_verified: bool = True
    deny: bool = False
    expires_in: int = 3600
    issue_refresh_token: bool = True
    codes: dict[str, dict[str, Any]] = field(default_factory=dict)
    dead_refresh_tokens: set[str] = field(default_factory=set)
    refresh_calls: list[str] = field(default_factory=list)
    revoked: list[str] = field(default_factory=list)
    token_errors: list[str] = field(default_factory=list)
    # Which account each refresh token belongs to (tests may add tokens they made themselves).
    refresh_owner: dict[str, str] = field(default_factory=dict)
    # Told (account, access token) of every access token issued, e.g. a Gmail stand-in.
    listeners: list[Callable[[str, str], None]] = field(default_factory=list)
    _serial: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    def reset(self) -> None:
        """Back to defaults between tests."""
        self.email, self.deny, self.expires_in, self.issue_refresh_token = "boss@example.com", False, 3600, True
        self.email_verified = True
        for collection in (self.codes, self.refresh_calls, self.revoked, self.token_errors, self.listeners):
            collection.clear()
        self.dead_refresh_tokens.clear()
        self.refresh_owner.clear()

    def revoke_account(self, email: str) -> None:
        """The account holder removed access: its refresh tokens are dead from now on."""
        self.dead_refresh_tokens.update(t for t, owner in self.refresh_owner.items() if owner == email)

    def app(self) -> Starlette:
        """The ASGI app serving /auth, /token and /revoke."""
        return Starlette(
            routes=[
                Route("/auth", self._authorize, methods=["GET"]),
                Route("/token", self._token, methods=["POST"]),
                Route("/revoke", self._revoke, methods=["POST"]),
            ]
        )

    async def _authorize(self, request: Request) -> Response:
        q = request.query_params
        redirect_uri, state = q["redirect_uri"], q["state"]
        if self.deny:
            return RedirectResponse(f"{redirect_uri}?{urlencode({'error': 'access_denied', 'state': state})}", 302)
        assert q["client_id"] == CLIENT_ID and q["response_type"] == "code"
        assert q["code_challenge_method"] == "S256" and q["access_type"] == "offline"
        code = secrets.token_urlsafe(16)
        self.codes[code] = {
            "challenge": q["code_challenge"],
            "redirect_uri": redirect_uri,
            "scope": q.get("scope", ""),
        }
        return RedirectResponse(f"{redirect_uri}?{urlencode({'code': code, 'state': state})}", 302)

    def _error(self, error: str) -> JSONResponse:
        self.token_errors.append(error)
        return JSONResponse({"error": error}, status_code=400)

    async def _token(self, request: Request) -> Response:
        auth = request.headers.get("authorization", "")
        expected = "Basic " + base64.b64encode(f"{CLIENT_ID}:{CLIENT_SECRET}".encode()).decode()
        if auth != expected:
            return JSONResponse({"error": "invalid_client"}, status_code=401)
        form = await _form(request)
        if form.get("grant_type") == "authorization_code":
            grant = self.codes.pop(str(form.get("code")), None)  # single use
            if grant is None or grant["redirect_uri"] != form.get("redirect_uri"):
                return self._error("invalid_grant")
            verifier = str(form.get("code_verifier", ""))
            if _b64(hashlib.sha256(verifier.encode()).digest()) != grant["challenge"]:
                return self._error("invalid_grant")
            return JSONResponse(self._tokens(grant["scope"], with_refresh=self.issue_refresh_token, email=self.email))
        if form.get("grant_type") == "refresh_token":
            token = str(form.get("refresh_token"))
            self.refresh_calls.append(token)
            if token in self.dead_refresh_tokens:
                return self._error("invalid_grant")
            return JSONResponse(self._tokens("", with_refresh=False, email=self.refresh_owner.get(token)))
        return self._error("unsupported_grant_type")

    def _tokens(self, scope: str, *, with_refresh: bool, email: str | None) -> dict[str, Any]:
        n = next(self._serial)
        body: dict[str, Any] = {
            "access_token": f"ya29.access-{n}-{secrets.token_hex(8)}",
            "expires_in": self.expires_in,
            "token_type": "Bearer",
            "id_token": id_token(self.email, self.email_verified),
        }
        if scope:
            body["scope"] = scope
        if with_refresh:
            body["refresh_token"] = f"1//refresh-{n}-{secrets.token_hex(8)}"
            if email is not None:
                self.refresh_owner[body["refresh_token"]] = email
        if email is not None:
            for listener in self.listeners:
                listener(email, body["access_token"])
        return body

    async def _revoke(self, request: Request) -> Response:
        form = await _form(request)
        token = str(form.get("token"))
        self.revoked.append(token)
        self.dead_refresh_tokens.add(token)
        return Response(status_code=200)


async def _form(request: Request) -> dict[str, str]:
    return dict(parse_qsl((await request.body()).decode()))
