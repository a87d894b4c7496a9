"""Google's error answers are outside input: whatever a 4xx/5xx body holds, the Gmail client
sorts it into the one rule's errors (401 -> TokenRejected, 403 for scopes -> ScopesMissing,
others -> GmailRefused / GmailUnavailable) and never fails otherwise or echoes the token."""

from __future__ import annotations

from typing import Any

import httpx
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from actions.gmail_client import GmailClient, GmailError
from oauth.vault import ScopesMissing, TokenRejected

TOKEN = "ya29.secret-token"
JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.floats(allow_nan=False) | st.text(max_size=50),
    lambda children: st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=10), children, max_size=5),
    max_leaves=30,
)
ERROR_BODIES = (
    JSON
    | st.fixed_dictionaries({"error": JSON})
    | st.fixed_dictionaries({"error": st.fixed_dictionaries({"errors": JSON, "details": JSON, "message": JSON})})
)


async def _answer(status: int, body: bytes) -> BaseException:
    transport = httpx.MockTransport(lambda request: httpx.Response(status, content=body))
    async with httpx.AsyncClient(transport=transport) as http:
        try:
            await GmailClient(http, "https://gmail.test/", TOKEN).profile()
        except (TokenRejected, ScopesMissing, GmailError) as exc:
            return exc
    raise AssertionError("an error status was taken for a success")


@settings(max_examples=200, deadline=None)
@given(status=st.sampled_from([400, 401, 403, 404, 409, 429, 500, 503]), body=ERROR_BODIES)
async def test_any_error_body_is_sorted_into_the_rules_errors(status: int, body: Any) -> None:
    error = await _answer(status, orjson.dumps(body))
    if status == 401:
        assert isinstance(error, TokenRejected)
    assert TOKEN not in str(error) and len(str(error)) < 1000


@settings(max_examples=50, deadline=None)
@given(body=st.binary(max_size=200))
async def test_a_body_that_is_not_json_is_still_sorted(body: bytes) -> None:
    error = await _answer(403, body)
    assert isinstance(error, GmailError)


async def test_a_deeply_nested_error_body_is_sorted_without_walking_it() -> None:
    deep = b'{"error": {"errors": ' + b"[" * 5000 + b"]" * 5000 + b"}}"
    error = await _answer(403, deep)
    assert isinstance(error, GmailError)


@pytest.mark.parametrize(
    "body",
    [
        {"error": {"code": 403, "errors": [{"reason": "insufficientPermissions"}]}},
        {"error": {"code": 403, "details": [{"reason": "ACCESS_TOKEN_SCOPE_INSUFFICIENT"}]}},
    ],
)
async def test_a_403_for_missing_scopes_is_scopes_missing_and_any_other_403_is_not(body: Any) -> None:
    assert isinstance(await _answer(403, orjson.dumps(body)), ScopesMissing)
    refused = {"error": {"code": 403, "message": "User not authorized to perform this action.", "errors": []}}
    assert not isinstance(await _answer(403, orjson.dumps(refused)), ScopesMissing)
