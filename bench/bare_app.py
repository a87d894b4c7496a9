"""The ceiling for signed-webhook ingest in one Python process: verify and parse, store nothing.

Same server stack as `hookyard serve` (Starlette on uvicorn with uvloop and httptools, one
process) and the same verifier (`ingest.signatures`); the answer has the same shape.
Run: `python -m bench.bare_app --port P` with BENCH_SECRET set to the endpoint's secret.
"""

from __future__ import annotations

import argparse
import os
import time
import uuid

import orjson
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from ingest.signatures import SCHEMES, SignatureError

_SCHEME = SCHEMES["standard-webhooks"]
_SECRETS = (os.environ.get("BENCH_SECRET", ""),)


async def receive(request: Request) -> Response:
    """Verify the Standard Webhooks signature, parse the JSON body, answer 202."""
    body = await request.body()
    headers = dict(request.headers)
    try:
        _SCHEME.verify(body, headers, _SECRETS, time.time(), 300)
    except SignatureError as exc:
        return JSONResponse({"error": exc.reason}, status_code=401)
    orjson.loads(body)
    _SCHEME.delivery_id(body, headers)
    return JSONResponse({"event_id": str(uuid.uuid4()), "duplicate": False}, status_code=202)


async def healthz(request: Request) -> Response:
    """Liveness, for the benchmark's readiness wait."""
    return JSONResponse({"status": "ok"})


app = Starlette(
    routes=[Route("/hooks/{endpoint_id}", receive, methods=["POST"]), Route("/healthz", healthz, methods=["GET"])]
)


def main() -> None:
    """Serve on 127.0.0.1 with one worker."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    uvicorn.run(
        app,
        host="127.0.0.1",
        port=args.port,
        loop="uvloop",
        http="httptools",
        workers=1,
        log_level="warning",
        access_log=False,
        backlog=2048,
    )


if __name__ == "__main__":
    main()
