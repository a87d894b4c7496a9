"""Signing in to the console over plain HTTP, for tests that need no browser."""

from __future__ import annotations

import re

import httpx

_CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


def csrf_of(html: str) -> str:
    """The CSRF token of the first form on a page."""
    found = _CSRF.search(html)
    assert found is not None, "no form on this page"
    return found.group(1)


async def signed_in(base_url: str, key: str) -> httpx.AsyncClient:
    """A cookie-keeping HTTP client signed in through the sign-in form, as a browser would."""
    client = httpx.AsyncClient(base_url=base_url, timeout=30)
    token = csrf_of((await client.get("/console/sign-in")).text)
    answer = await client.post("/console/sign-in", data={"csrf_token": token, "api_key": key})
    assert answer.status_code == 303, answer.text
    return client
