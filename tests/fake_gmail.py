"""A small stand-in for the Gmail REST API: the calls hookyard makes, with Gmail's shapes.

Mailboxes are chosen by the bearer token. Each keeps messages, a history of messageAdded
records with increasing (gapped) ids, watches and sent mail. Tests can shrink history pages,
expire old history ids (404, as Gmail does), and script failures. Like Gmail, it answers 401
to an access token it does not know or that was revoked (`revoke`), 403
`insufficientPermissions` to a grant without the scopes (`scopes_missing`), and 403 "User not
authorized" to a watch whose topic the push service may not publish to (`watch_refused`).
`accept_tokens_from(fake_google)` makes tokens the Google stand-in issues work here.
"""

from __future__ import annotations

import base64
import email
import email.policy
import itertools
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

_ids = itertools.count(0x18C0000000000000)


def _b64(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


def _error(status: int, message: str, reason: str = "failed") -> JSONResponse:
    return JSONResponse(
        {"error": {"code": status, "message": message, "errors": [{"reason": reason, "message": message}]}},
        status_code=status,
    )


@dataclass
class FakeMailbox:
    email: str
    token: str
    history_id: int = 1000
    # Records with ids below this are gone: history.list from older ids answers 404.
    oldest_history_id: int = 0
    page_size: int = 100
    messages: dict[str, dict[str, Any]] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)
    watches: list[dict[str, Any]] = field(default_factory=list)
    stops: int = 0
    sent: list[email.message.EmailMessage] = field(default_factory=list)
    calls: list[str] = field(default_factory=list)
    # Statuses to answer instead of the next calls to a path suffix ("/history", "/messages/send");
    # 0 lets a call through.
    failures: dict[str, list[int]] = field(default_factory=dict)
    scopes_missing: bool = False
    watch_refused: bool = False

    def deliver(
        self,
        *,
        sender: str = "Alice <alice@example.test>",
        to: str | None = None,
        subject: str = "Hello",
        text: str = "Hi there",
        html: str | None = None,
        labels: Iterable[str] = ("INBOX", "UNREAD"),
        headers: dict[str, str] | None = None,
        attachments: Iterable[tuple[str, str, int]] = (),
        thread_id: str | None = None,
    ) -> str:
        """A message arrives; returns its id. History ids advance with gaps, as Gmail's do."""
        message_id = f"{next(_ids):x}"
        thread = thread_id or message_id
        self.history_id += 7
        all_headers = {
            "From": sender,
            "To": to or self.email,
            "Subject": subject,
            "Date": "Mon, 23 Nov 2026 10:00:00 +0000",
            "Message-ID": f"<{message_id}@mail.example.test>",
            **(headers or {}),
        }
        parts: list[dict[str, Any]] = [
            {
                "partId": "0",
                "mimeType": "text/plain",
                "filename": "",
                "headers": [{"name": "Content-Type", "value": "text/plain; charset=UTF-8"}],
                "body": {"size": len(text), "data": _b64(text)},
            }
        ]
        if html is not None:
            parts.append(
                {
                    "partId": "1",
                    "mimeType": "text/html",
                    "filename": "",
                    "headers": [{"name": "Content-Type", "value": "text/html; charset=UTF-8"}],
                    "body": {"size": len(html), "data": _b64(html)},
                }
            )
        for n, (filename, mime, size) in enumerate(attachments, start=2):
            parts.append(
                {
                    "partId": str(n),
                    "mimeType": mime,
                    "filename": filename,
                    "headers": [{"name": "Content-Disposition", "value": f'attachment; filename="{filename}"'}],
                    "body": {"size": size, "attachmentId": f"att-{message_id}-{n}"},
                }
            )
        label_ids = list(labels)
        self.messages[message_id] = {
            "id": message_id,
            "threadId": thread,
            "labelIds": label_ids,
            "snippet": text[:100],
            "historyId": str(self.history_id),
            "internalDate": str(int(time.time() * 1000)),
            "sizeEstimate": len(text),
            "payload": {
                "partId": "",
                "mimeType": "multipart/mixed",
                "filename": "",
                "headers": [{"name": k, "value": v} for k, v in all_headers.items()],
                "body": {"size": 0},
                "parts": parts,
            },
        }
        self.history.append(
            {
                "id": str(self.history_id),
                "messages": [{"id": message_id, "threadId": thread}],
                "messagesAdded": [{"message": {"id": message_id, "threadId": thread, "labelIds": label_ids}}],
            }
        )
        return message_id

    def delete(self, message_id: str) -> None:
        self.messages.pop(message_id, None)

    def expire_history(self) -> None:
        """Every older history id becomes invalid (history.list answers 404); the current one stays."""
        self.oldest_history_id = self.history_id


class FakeGmail:
    """The fake server: `app` to serve, `mailbox()` to add accounts."""

    def __init__(self) -> None:
        self.mailboxes: dict[str, FakeMailbox] = {}
        self.by_email: dict[str, FakeMailbox] = {}
        self.url = ""
        base = "/gmail/v1/users/me"
        self.app = Starlette(
            routes=[
                Route(base + "/history", self._history, methods=["GET"]),
                Route(base + "/messages", self._list, methods=["GET"]),
                Route(base + "/messages/send", self._send, methods=["POST"]),
                Route(base + "/messages/{id}", self._get, methods=["GET"]),
                Route(base + "/profile", self._profile, methods=["GET"]),
                Route(base + "/watch", self._watch, methods=["POST"]),
                Route(base + "/stop", self._stop, methods=["POST"]),
            ]
        )

    def mailbox(self, email_address: str, token: str) -> FakeMailbox:
        box = FakeMailbox(email_address, token)
        self.mailboxes[token] = box
        self.by_email[email_address] = box
        return box

    def grant(self, email_address: str, token: str) -> None:
        """An access token Google issued for this account now reaches its mailbox."""
        box = self.by_email.get(email_address)
        if box is not None:
            self.mailboxes[token] = box

    def revoke(self, box: FakeMailbox) -> None:
        """The account holder removed access: every access token of the mailbox answers 401."""
        for token in [t for t, b in self.mailboxes.items() if b is box]:
            del self.mailboxes[token]

    def accept_tokens_from(self, google: Any) -> None:
        """Tokens the Google stand-in issues (connects and refreshes) reach the account's mailbox."""
        google.listeners.append(self.grant)

    def _box(self, request: Request) -> FakeMailbox | Response:
        auth = request.headers.get("authorization", "")
        box = self.mailboxes.get(auth.removeprefix("Bearer ").strip())
        if box is None:
            return _error(401, "Request had invalid authentication credentials.", "authError")
        box.calls.append(f"{request.method} {request.url.path.removeprefix('/gmail/v1/users/me')}")
        if box.scopes_missing:
            response = _error(403, "Request had insufficient authentication scopes.", "insufficientPermissions")
            return response
        for suffix, statuses in box.failures.items():
            if request.url.path.endswith(suffix) and statuses:
                status = statuses.pop(0)
                if status:  # 0 lets this call through
                    reason = "backendError" if status >= 500 else "rateLimitExceeded" if status == 429 else "failed"
                    return _error(status, f"scripted failure {status}", reason)
        return box

    async def _history(self, request: Request) -> Response:
        box = self._box(request)
        if isinstance(box, Response):
            return box
        start = int(request.query_params["startHistoryId"])
        if start < box.oldest_history_id:
            return _error(404, "Requested entity was not found.", "notFound")
        label = request.query_params.get("labelId")
        records = [
            r
            for r in box.history
            if int(r["id"]) > start
            and (label is None or any(label in a["message"]["labelIds"] for a in r["messagesAdded"]))
        ]
        offset = int(request.query_params.get("pageToken") or 0)
        size = min(int(request.query_params.get("maxResults", 100)), box.page_size)
        page = records[offset : offset + size]
        body: dict[str, Any] = {"historyId": str(box.history_id)}
        if page:
            body["history"] = page
        if offset + size < len(records):
            body["nextPageToken"] = str(offset + size)
        return JSONResponse(body)

    async def _get(self, request: Request) -> Response:
        box = self._box(request)
        if isinstance(box, Response):
            return box
        message = box.messages.get(request.path_params["id"])
        if message is None:
            return _error(404, "Requested entity was not found.", "notFound")
        return JSONResponse(message)

    async def _list(self, request: Request) -> Response:
        box = self._box(request)
        if isinstance(box, Response):
            return box
        labels = request.query_params.getlist("labelIds")
        query = request.query_params.get("q", "")
        found = [m for m in box.messages.values() if all(label in m["labelIds"] for label in labels)]
        for term in query.split():
            if term.startswith("after:"):
                after_ms = int(term.removeprefix("after:")) * 1000
                found = [m for m in found if int(m["internalDate"]) > after_ms]
            elif term.startswith("rfc822msgid:"):
                wanted = term.removeprefix("rfc822msgid:")
                found = [m for m in found if _header(m, "Message-ID") == wanted]
        found.sort(key=lambda m: int(m["historyId"]), reverse=True)
        limit = int(request.query_params.get("maxResults", 100))
        page = found[:limit]
        body: dict[str, Any] = {"resultSizeEstimate": len(page)}
        if page:
            body["messages"] = [{"id": m["id"], "threadId": m["threadId"]} for m in page]
        return JSONResponse(body)

    async def _profile(self, request: Request) -> Response:
        box = self._box(request)
        if isinstance(box, Response):
            return box
        return JSONResponse(
            {
                "emailAddress": box.email,
                "messagesTotal": len(box.messages),
                "threadsTotal": len(box.messages),
                "historyId": str(box.history_id),
            }
        )

    async def _watch(self, request: Request) -> Response:
        box = self._box(request)
        if isinstance(box, Response):
            return box
        body = await request.json()
        if box.watch_refused:
            return _error(403, "User not authorized to perform this action.", "forbidden")
        if not str(body.get("topicName", "")).startswith("projects/"):
            return _error(400, "Invalid topicName", "invalidArgument")
        box.watches.append(body)
        expiration = int((time.time() + 7 * 86400) * 1000)
        return JSONResponse({"historyId": str(box.history_id), "expiration": str(expiration)})

    async def _stop(self, request: Request) -> Response:
        box = self._box(request)
        if isinstance(box, Response):
            return box
        box.stops += 1
        return Response(status_code=204)

    async def _send(self, request: Request) -> Response:
        box = self._box(request)
        if isinstance(box, Response):
            return box
        body = await request.json()
        raw = base64.urlsafe_b64decode(body["raw"] + "=" * (-len(body["raw"]) % 4))
        parsed = email.message_from_bytes(raw, policy=email.policy.default)
        assert isinstance(parsed, email.message.EmailMessage)
        box.sent.append(parsed)
        message_id = f"{next(_ids):x}"
        thread = body.get("threadId") or message_id
        box.history_id += 3
        # Mail to oneself lands in one's inbox too, as in Gmail.
        labels = ["SENT", "INBOX"] if box.email in str(parsed.get("To", "")) else ["SENT"]
        box.messages[message_id] = {
            "id": message_id,
            "threadId": thread,
            "labelIds": labels,
            "snippet": "",
            "historyId": str(box.history_id),
            "internalDate": str(int(time.time() * 1000)),
            "payload": {
                "mimeType": parsed.get_content_type(),
                "headers": [{"name": k, "value": str(v)} for k, v in parsed.items()],
                "body": {"size": 0},
            },
        }
        box.history.append(
            {
                "id": str(box.history_id),
                "messagesAdded": [{"message": {"id": message_id, "threadId": thread, "labelIds": labels}}],
            }
        )
        return JSONResponse({"id": message_id, "threadId": thread, "labelIds": labels})


def _header(message: dict[str, Any], name: str) -> str | None:
    for header in message["payload"].get("headers", []):
        if header["name"].lower() == name.lower():
            return str(header["value"])
    return None
