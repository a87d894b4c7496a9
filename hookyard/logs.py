"""Logging set-up: readable lines for people, or one JSON object per line for collectors."""

from __future__ import annotations

import logging
import sys

import orjson


class JsonFormatter(logging.Formatter):
    """One JSON object per record; `extra` ids (event_id, execution_id, workflow_id) included."""

    _EXTRA = ("event_id", "execution_id", "workflow_id", "endpoint_id")

    def format(self, record: logging.LogRecord) -> str:
        """Serialise a record."""
        out: dict[str, object] = {
            "ts": self.formatTime(record, "%Y-%m-%dT%H:%M:%S"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key in self._EXTRA:
            if hasattr(record, key):
                out[key] = getattr(record, key)
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(out, default=str).decode()


def configure(level: str = "INFO", json: bool = False, process: str = "") -> None:
    """Configure the root logger once per process."""
    handler = logging.StreamHandler(sys.stderr)
    prefix = f"[{process}] " if process else ""
    handler.setFormatter(
        JsonFormatter()
        if json
        else logging.Formatter(f"%(asctime)s {prefix}%(levelname)s %(name)s: %(message)s", "%H:%M:%S")
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # Per-request access lines would drown everything else at webhook rates.
    logging.getLogger("uvicorn.access").setLevel(logging.WARNING)
