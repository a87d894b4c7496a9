"""Connect links: signed, expiring, single-use URLs that start an OAuth2 connection.

A link is `<link id>.<key id>.<signature>`; the signature is an HMAC over the link id with a
key derived from a master key, so a link cannot be forged or altered, and links keep working
across a master-key rotation while the old key stays in the keyring. Expiry and single use are
enforced by the link's row.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from uuid import UUID

from oauth.crypto import CryptoError, Keyring

_PURPOSE = "connect-links"


class BadLink(ValueError):
    """The link was not issued by this service (malformed or tampered with)."""


def _sign(keyring: Keyring, kid: str, link_id: UUID) -> str:
    mac = hmac.new(keyring.derive(_PURPOSE, kid), f"link|{link_id}".encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(mac).decode().rstrip("=")


def link_token(keyring: Keyring, link_id: UUID) -> str:
    """The URL-safe token for a link, signed with the primary key."""
    return f"{link_id}.{keyring.primary_id}.{_sign(keyring, keyring.primary_id, link_id)}"


def verify_link_token(keyring: Keyring, token: str) -> UUID:
    """The link id of a genuine token; raises `BadLink` otherwise."""
    parts = token.split(".")
    if len(parts) != 3:
        raise BadLink("the connect link is malformed")
    raw_id, kid, signature = parts
    try:
        link_id = UUID(raw_id)
        expected = _sign(keyring, kid, link_id)
    except (ValueError, CryptoError):
        raise BadLink("the connect link is not valid") from None
    # Bytes: compare_digest refuses non-ASCII str, and a link is whatever a browser sends.
    if not hmac.compare_digest(expected.encode(), signature.encode()):
        raise BadLink("the connect link is not valid")
    return link_id
