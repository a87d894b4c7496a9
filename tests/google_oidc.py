"""A stand-in for Google's token signer: RSA keys, their JWKS, and tokens like Pub/Sub sends."""

from __future__ import annotations

import time
from typing import Any

from joserfc import jwt
from joserfc.jwk import RSAKey

PUSH_ACCOUNT = "push@hookyard-test.iam.gserviceaccount.com"
AUDIENCE = "https://hooks.example.test/ingest/pubsub/gmail"


class GoogleSigner:
    """Signs tokens with its own keys; `jwks()` is what the certs URL would publish."""

    def __init__(self, kid: str = "key-1") -> None:
        self.kid = kid
        self.key = RSAKey.generate_key(2048, parameters={"kid": kid})

    def jwks(self) -> dict[str, Any]:
        return {"keys": [self.key.as_dict(private=False) | {"kid": self.kid, "alg": "RS256", "use": "sig"}]}

    def token(self, now: float | None = None, kid: str | None = None, **claims: Any) -> str:
        issued = time.time() if now is None else now
        body: dict[str, Any] = {
            "iss": "https://accounts.google.com",
            "aud": AUDIENCE,
            "azp": "1234567890",
            "sub": "1234567890",
            "email": PUSH_ACCOUNT,
            "email_verified": True,
            "iat": int(issued),
            "exp": int(issued) + 3600,
        }
        body.update(claims)
        body = {k: v for k, v in body.items() if v is not None}
        return jwt.encode({"alg": "RS256", "kid": kid or self.kid}, body, self.key)

    def header(self, **kwargs: Any) -> str:
        return f"Bearer {self.token(**kwargs)}"
