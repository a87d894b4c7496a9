"""The action target of the end-to-end benchmark: answers 200 and records when each id arrived.

`POST /r` with a JSON body `{"id": ...}` is recorded (arrival time, wall clock); `GET /stats`
returns the request count; `GET /arrivals?prefix=p` returns {id: first arrival time}.
Run: `python -m bench.receiver --port P`.
"""

from __future__ import annotations

import argparse
import time

import orjson
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

_arrivals: dict[str, float] = {}
_count = 0


async def record(request: Request) -> Response:
    """Count the request and note the first arrival of its id."""
    global _count
    arrived = time.time()
    _count += 1
    try:
        event_id = str(orjson.loads(await request.body()).get("id"))
    except (orjson.JSONDecodeError, AttributeError):
        event_id = ""
    _arrivals.setdefault(event_id, arrived)
    return Response(b"ok", status_code=200)


async def stats(request: Request) -> Response:
    """Requests seen so far, and distinct ids."""
    return JSONResponse({"count": _count, "distinct": len(_arrivals)})


async def arrivals(request: Request) -> Response:
    """First arrival time of each id starting with `prefix`."""
    prefix = request.query_params.get("prefix", "")
    return JSONResponse({k: v for k, v in _arrivals.items() if k.startswith(prefix)})


app = Starlette(
    routes=[
        Route("/r", record, methods=["POST"]),
        Route("/stats", stats, methods=["GET"]),
        Route("/arrivals", arrivals, methods=["GET"]),
    ]
)


def main() -> None:
    """Serve on 127.0.0.1."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning", access_log=False, backlog=2048)


if __name__ == "__main__":
    main()
