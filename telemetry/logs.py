"""Logging set-up: readable lines for people, or one JSON object per line for collectors."""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from types import MappingProxyType
from typing import Any

import orjson

# Ids of what the current task works on, added to every JSON line it logs (see `log_context`).
_CONTEXT: ContextVar[Mapping[str, object]] = ContextVar("hookyard_log_context", default=MappingProxyType({}))

# Keys whose values never reach a log line, matched case-insensitively as substrings.
_SENSITIVE = ("secret", "token", "password", "authorization", "cookie", "api_key", "apikey", "private_key")
REDACTED = "[redacted]"


@contextmanager
def log_context(**fields: object) -> Iterator[None]:
    """Add ids (event_id, execution_id, workflow_id, …) to every record logged inside the block."""
    token = _CONTEXT.set({**_CONTEXT.get(), **{k: v for k, v in fields.items() if v is not None}})
    try:
        yield
    finally:
        _CONTEXT.reset(token)


def redact(value: Any, depth: int = 0) -> Any:
    """A copy of `value` with the values of secret-looking keys replaced, in nested dicts and lists too."""
    if depth > 8:
        return value
    if isinstance(value, Mapping):
        return {
            k: REDACTED if isinstance(k, str) and _is_sensitive(k) else redact(v, depth + 1) for k, v in value.items()
        }
    if type(value) in (list, tuple):  # exact types: a named tuple cannot be rebuilt from an iterable
        return type(value)(redact(v, depth + 1) for v in value)
    return value


def _is_sensitive(key: str) -> bool:
    lowered = key.lower()
    return any(word in lowered for word in _SENSITIVE)


class RedactingFilter(logging.Filter):
    """Redacts mappings passed as the message or its arguments, whatever the formatter."""

    def filter(self, record: logging.LogRecord) -> bool:
        """Rewrite the record in place; never drops it."""
        if isinstance(record.msg, Mapping):
            record.msg = redact(record.msg)
        if isinstance(record.args, Mapping):
            record.args = redact(record.args)
        elif record.args and any(isinstance(a, Mapping | list | tuple) for a in record.args):
            record.args = tuple(redact(a) for a in record.args)
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per record; ids from `log_context` or `extra` (event_id, execution_id, …) included."""

    _EXTRA = ("event_id", "execution_id", "workflow_id", "endpoint_id")

    def __init__(self, process: str = "") -> None:
        super().__init__()
        self._process = process

    def format(self, record: logging.LogRecord) -> str:
        """Serialise a record."""
        out: dict[str, object] = {
            "ts": self.formatTime(record, "%Y-%m-%dT%H:%M:%S"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        if self._process:
            out["process"] = self._process
        out.update(_CONTEXT.get())
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
        JsonFormatter(process)
        if json
        else logging.Formatter(f"%(asctime)s {prefix}%(levelname)s %(name)s: %(message)s", "%H:%M:%S")
    )
    handler.addFilter(RedactingFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # Per-request access lines would drown everything else at webhook rates.
    logging.getLogger("uvicorn.access").setLevel(logging.WARNING)
    # httpx logs every request URL at INFO; outbound URLs can carry secrets (Slack incoming
    # webhooks, tokens in query strings), so only its warnings get through.
    for name in ("httpx", "httpcore"):
        logging.getLogger(name).setLevel(logging.WARNING)
