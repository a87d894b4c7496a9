"""`GET /metrics`: this API process's Prometheus series.

Served on the API's own port; keep it off the public ingress (it carries counts, never secrets).
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from ingest.state import app_state


async def metrics(request: Request) -> Response:
    """The registry in the exposition format the scraper asked for (OpenMetrics or Prometheus text)."""
    body, content_type = app_state(request).metrics.exposition(request.headers.get("accept"))
    return Response(body, headers={"content-type": content_type})
