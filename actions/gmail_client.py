"""hookyard's one Gmail client: the REST calls the mailbox sync and the send action make.

Async, over the worker's shared httpx client, so every Gmail call goes through the egress
backend like any other request, shares its connection pool, and is made in the event loop
instead of a thread per send (google-api-python-client's httplib2 transport could do none of
these). The base URL is a setting (`HOOKYARD_GMAIL_API_BASE`), so tests and stand-ins can
serve it. Errors are sorted once:

    TokenRejected (oauth)   401: the access token is refused; the caller's grant refreshes once
    ScopesMissing (oauth)   403 insufficientPermissions / ACCESS_TOKEN_SCOPE_INSUFFICIENT
    GmailError
     ├── HistoryGone        404 on history.list: the start id is too old, do a full sync
     ├── GmailRefused       403/400 and other 4xx: retrying the same call will not help
     └── GmailUnavailable   429, 5xx, timeouts, network: try again later

Calls are made through `oauth.vault.Grant.call`, which applies the 401 rule.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import httpx
import orjson

from actions.http import parse_retry_after
from oauth.vault import ScopesMissing, TokenRejected
from runtime.headers import EXECUTION_HEADER
from schemas import jsonlimits

DEFAULT_API_BASE = "https://gmail.googleapis.com/"
_TIMEOUT_S = 30.0
# What Google answers (403) when the grant lacks a scope the call needs.
_SCOPE_REASONS = frozenset({"insufficientPermissions", "ACCESS_TOKEN_SCOPE_INSUFFICIENT"})


def sent_by_hookyard(message: Mapping[str, Any]) -> bool:
    """Whether the send action wrote this message (`users.messages.get`: it carries the header)."""
    payload = message.get("payload")
    headers = payload.get("headers") if isinstance(payload, dict) else None
    wanted = EXECUTION_HEADER.lower()
    return any(
        isinstance(h, dict) and isinstance(h.get("name"), str) and h["name"].lower() == wanted
        for h in (headers if isinstance(headers, list) else [])
    )


class GmailError(Exception):
    """A Gmail call failed; the message names the call and status, never the token."""


class HistoryGone(GmailError):
    """The stored history id is no longer valid."""


class GmailRefused(GmailError):
    """Gmail refused the request (bad credential, missing scope, bad argument)."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


class GmailUnavailable(GmailError):
    """Gmail could not answer now."""

    def __init__(self, message: str, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class GmailClient:
    """One mailbox's API, authorised with an access token (`userId` is always `me`)."""

    def __init__(self, http: httpx.AsyncClient, base_url: str, access_token: str) -> None:
        self._http = http
        self._base = base_url.rstrip("/") + "/gmail/v1/users/me"
        self._headers = {"authorization": f"Bearer {access_token}", "accept": "application/json"}

    async def history(
        self, start_history_id: int, *, label_id: str | None = None, page_token: str | None = None
    ) -> dict[str, Any]:
        """One page of messageAdded history records after `start_history_id`."""
        params: dict[str, str | int] = {
            "startHistoryId": start_history_id,
            "historyTypes": "messageAdded",
            "maxResults": 500,
        }
        if label_id:
            params["labelId"] = label_id
        if page_token:
            params["pageToken"] = page_token
        try:
            return await self._call("GET", "/history", "history.list", params=params)
        except GmailRefused as exc:
            if exc.status == 404:
                raise HistoryGone(f"history id {start_history_id} is no longer available") from None
            raise

    async def message(self, message_id: str) -> dict[str, Any] | None:
        """A full message, or None if it was deleted meanwhile."""
        try:
            return await self._call("GET", f"/messages/{message_id}", "messages.get", params={"format": "full"})
        except GmailRefused as exc:
            if exc.status == 404:
                return None
            raise

    async def list_messages(
        self, *, label_ids: Sequence[str] = (), query: str | None = None, max_results: int = 100
    ) -> list[str]:
        """Ids of the newest messages (at most `max_results`), newest first."""
        ids: list[str] = []
        page_token: str | None = None
        while len(ids) < max_results:
            params: list[tuple[str, str | int]] = [("maxResults", min(500, max_results - len(ids)))]
            params += [("labelIds", label) for label in label_ids]
            if query:
                params.append(("q", query))
            if page_token:
                params.append(("pageToken", page_token))
            page = await self._call("GET", "/messages", "messages.list", params=params)
            ids += [m["id"] for m in page.get("messages", []) if isinstance(m, dict) and isinstance(m.get("id"), str)]
            page_token = page.get("nextPageToken")
            if not page_token:
                break
        return ids[:max_results]

    async def profile(self) -> dict[str, Any]:
        """The mailbox's address and current history id."""
        return await self._call("GET", "/profile", "getProfile")

    async def watch(self, topic: str, label_ids: Sequence[str]) -> dict[str, Any]:
        """Create or renew the push watch; returns `historyId` and `expiration` (epoch ms)."""
        body = {"topicName": topic, "labelIds": list(label_ids), "labelFilterBehavior": "include"}
        return await self._call("POST", "/watch", "watch", json=body)

    async def stop(self) -> None:
        """End push notifications for the mailbox."""
        await self._call("POST", "/stop", "stop")

    async def send(self, raw: str, thread_id: str | None = None) -> dict[str, Any]:
        """`users.messages.send` of a base64url RFC 822 message; returns `id` and `threadId`."""
        body: dict[str, Any] = {"raw": raw}
        if thread_id:
            body["threadId"] = thread_id
        return await self._call("POST", "/messages/send", "messages.send", json=body)

    async def find(self, rfc822_message_id: str) -> dict[str, Any] | None:
        """The message with this `Message-ID` header (`id`, `threadId`), if the mailbox has one."""
        page = await self._call(
            "GET", "/messages", "messages.list", params={"q": f"rfc822msgid:{rfc822_message_id}", "maxResults": 1}
        )
        found = page.get("messages")
        return found[0] if isinstance(found, list) and found and isinstance(found[0], dict) else None

    async def _call(self, method: str, path: str, name: str, **kwargs: Any) -> dict[str, Any]:
        try:
            response = await self._http.request(
                method, self._base + path, headers=self._headers, timeout=_TIMEOUT_S, **kwargs
            )
        except httpx.TimeoutException:
            raise GmailUnavailable(f"Gmail {name} timed out") from None
        except httpx.HTTPError as exc:
            raise GmailUnavailable(f"Gmail {name} unreachable: {type(exc).__name__}") from None
        status = response.status_code
        if status == 204 or (200 <= status < 300 and not response.content):
            return {}
        if 200 <= status < 300:
            try:
                # orjson: a message nested past its 1,024 levels is an error, not a RecursionError.
                value = orjson.loads(response.content)
            except orjson.JSONDecodeError:
                raise GmailUnavailable(f"Gmail {name} answered with a body that is not JSON") from None
            return value if isinstance(value, dict) else {}
        reason = _reason(response)
        if status == 401:
            raise TokenRejected(f"Gmail {name} answered 401{reason}")
        if status == 403 and _SCOPE_REASONS & _reasons(response):
            raise ScopesMissing(f"Gmail {name} answered 403{reason}")
        if status == 429 or status >= 500 or (status == 403 and "rateLimitExceeded" in reason):
            raise GmailUnavailable(
                f"Gmail {name} answered {status}{reason}", parse_retry_after(response.headers.get("retry-after"))
            )
        raise GmailRefused(f"Gmail {name} answered {status}{reason}", status)


# Google's error bodies are small and shallow; anything larger or deeper is not read.
_ERROR_BYTES = 65_536
_ERROR_DEPTH = 16


def _error(response: httpx.Response) -> dict[str, Any]:
    """The `error` object of an error answer, or {}: parsed bounded in size and depth (iteratively)."""
    if len(response.content) > _ERROR_BYTES:
        return {}
    try:
        body = jsonlimits.loads(response.content, _ERROR_DEPTH)
    except (orjson.JSONDecodeError, ValueError):
        return {}
    error = body.get("error") if isinstance(body, dict) else None
    return error if isinstance(error, dict) else {}


def _reasons_of(error: dict[str, Any]) -> list[str]:
    """Machine-readable reasons (`errors[].reason`, `details[].reason`), first ten, each cut short."""
    found: list[str] = []
    for key in ("errors", "details"):
        items = error.get(key)
        for item in items if isinstance(items, list) else []:
            if isinstance(item, dict) and isinstance(item.get("reason"), str) and len(found) < 10:
                found.append(item["reason"][:100])
    return found


def _reasons(response: httpx.Response) -> set[str]:
    """Every machine-readable reason in Google's error body."""
    return set(_reasons_of(_error(response)))


def _reason(response: httpx.Response) -> str:
    """Google's error reason and message, shortened: enough for the owner to act on."""
    error = _error(response)
    message = error.get("message")
    text = message[:200] if isinstance(message, str) else ""
    reasons = [r for r in _reasons_of(error) if r]
    parts = [p for p in (", ".join(reasons), text) if p]
    return f" ({'; '.join(parts)})" if parts else ""
