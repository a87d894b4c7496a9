"""The codec server: lets operators' tools show the payloads that hookyard encrypts in Temporal.

Temporal's remote codec protocol: `POST {endpoint}/encode` and `POST {endpoint}/decode` take and
return `{"payloads": [...]}` in proto3 JSON (metadata values and data base64), with the namespace
in an `X-Namespace` header. The endpoint is `/codec`:

- `temporal --codec-endpoint https://api.example.com/codec --codec-auth "Bearer $TOKEN"` (CLI);
- the Temporal UI cannot send a header of our choosing, so it is given the token in the path:
  `/codec/ui/{token}` (then anyone who can read the UI's settings holds the token: the same
  people who see payloads through it).

Only operators hold the token (`HOOKYARD_CODEC_AUTH_TOKEN`); without one the routes do not
exist (404). Browsers may call it from the origins in `HOOKYARD_CODEC_CORS_ORIGINS`.
"""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable, Sequence

import orjson
from google.protobuf.json_format import MessageToDict, ParseDict, ParseError
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route
from temporalio.api.common.v1 import Payload, Payloads

from ingest.errors import error_response
from oauth.crypto import CryptoError
from runtime.codec import EncryptionCodec
from settings import Settings

# One request carries at most what one gRPC message may (4 MiB), with room for base64.
MAX_BODY_BYTES = 6 * 1024 * 1024
MIN_TOKEN_CHARS = 32
_ALLOWED_HEADERS = "Authorization, Content-Type, X-Namespace"

Convert = Callable[[Sequence[Payload]], Awaitable[list[Payload]]]


class CodecSettingsError(ValueError):
    """The codec server is switched on but cannot work as configured; names the setting."""


class _Rejected(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


class CodecServer:
    """The encode/decode handlers for one deployment's keyring, token and allowed origins."""

    def __init__(self, settings: Settings) -> None:
        token = settings.codec_auth_token
        if len(token) < MIN_TOKEN_CHARS:
            raise CodecSettingsError(
                f"HOOKYARD_CODEC_AUTH_TOKEN must be at least {MIN_TOKEN_CHARS} characters "
                "(e.g. python -c 'import secrets; print(secrets.token_urlsafe(32))')"
            )
        if not settings.master_keys:
            raise CodecSettingsError("HOOKYARD_MASTER_KEYS is not set; the codec server decrypts with it")
        self._token = token.encode()
        self._namespace = settings.temporal_namespace
        self._origins = frozenset(origin.rstrip("/") for origin in settings.codec_cors_origins)
        self._codec = EncryptionCodec(settings.master_keys)

    def routes(self) -> list[BaseRoute]:
        """The header-authenticated routes and the UI's token-in-path routes."""
        methods = ["POST", "OPTIONS"]
        return [
            Route("/codec/encode", self._endpoint(self._codec.encode), methods=methods),
            Route("/codec/decode", self._endpoint(self._codec.decode), methods=methods),
            Route("/codec/ui/{token}/encode", self._endpoint(self._codec.encode), methods=methods),
            Route("/codec/ui/{token}/decode", self._endpoint(self._codec.decode), methods=methods),
        ]

    def _endpoint(self, convert: Convert) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            cors = self._cors_headers(request)
            if request.method == "OPTIONS":
                return self._preflight(request, cors)
            try:
                self._authenticate(request)
                self._check_namespace(request)
                payloads = _parse(await _read_body(request))
                try:
                    converted = await convert(payloads.payloads)
                except CryptoError as exc:
                    raise _Rejected(422, "undecodable", str(exc)) from exc
            except _Rejected as exc:
                response = error_response(exc.status, exc.code, exc.message)
                if exc.status == 401:
                    response.headers["www-authenticate"] = "Bearer"
                response.headers.update(cors)
                return response
            body = MessageToDict(Payloads(payloads=converted))
            return JSONResponse({"payloads": body.get("payloads", [])}, headers=cors)

        return endpoint

    def _cors_headers(self, request: Request) -> dict[str, str]:
        origin = request.headers.get("origin")
        if origin is None or origin not in self._origins:
            return {"vary": "Origin"}
        return {
            "access-control-allow-origin": origin,
            "access-control-allow-credentials": "true",
            "vary": "Origin",
        }

    def _preflight(self, request: Request, cors: dict[str, str]) -> Response:
        # Browsers send no Authorization header with a preflight, so it is not authenticated.
        if "access-control-allow-origin" not in cors:
            origin = request.headers.get("origin", "")
            return error_response(403, "forbidden", f"origin {origin!r} may not call the codec server")
        headers = {
            **cors,
            "access-control-allow-methods": "POST, OPTIONS",
            "access-control-allow-headers": _ALLOWED_HEADERS,
            "access-control-max-age": "600",
        }
        return Response(status_code=204, headers=headers)

    def _authenticate(self, request: Request) -> None:
        presented = request.path_params.get("token")
        if presented is None:
            scheme, _, credentials = request.headers.get("authorization", "").partition(" ")
            presented = credentials.strip() if scheme.lower() == "bearer" else ""
        if not presented:
            raise _Rejected(401, "unauthorized", "the codec server needs Authorization: Bearer <codec token>")
        if not hmac.compare_digest(presented.encode(), self._token):
            raise _Rejected(401, "unauthorized", "the codec token is not valid")

    def _check_namespace(self, request: Request) -> None:
        namespace = request.headers.get("x-namespace")
        if namespace and namespace != self._namespace:
            message = f"namespace {namespace!r} is not served here (only {self._namespace!r})"
            raise _Rejected(400, "bad_request", message)


def routes(settings: Settings) -> list[BaseRoute]:
    """The codec routes, or none (so 404) when no codec token is configured."""
    if not settings.codec_auth_token:
        return []
    return CodecServer(settings).routes()


async def _read_body(request: Request) -> bytes:
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_BODY_BYTES:
            raise _Rejected(413, "payload_too_large", f"codec requests are limited to {MAX_BODY_BYTES} bytes")
    return bytes(body)


def _parse(body: bytes) -> Payloads:
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise _Rejected(400, "bad_request", "the body is not valid JSON") from exc
    if not isinstance(document, dict) or not isinstance(document.get("payloads"), list):
        raise _Rejected(400, "bad_request", 'the body must be {"payloads": [...]}')
    try:
        # Unknown fields are dropped: newer UIs may send fields this SDK's protos do not have.
        return ParseDict({"payloads": document["payloads"]}, Payloads(), ignore_unknown_fields=True)
    except ParseError as exc:
        raise _Rejected(400, "bad_request", f"payloads are not valid proto3 JSON: {exc}") from exc
