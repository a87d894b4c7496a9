"""Keyset pagination over the `seq` column, with opaque cursors."""

from __future__ import annotations

import base64
from collections.abc import Sequence
from typing import Any


class BadCursor(ValueError):
    """The cursor was not produced by this API."""


def encode_cursor(seq: int) -> str:
    """An opaque cursor pointing after the row with this seq."""
    return base64.urlsafe_b64encode(f"s{seq}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str | None) -> int | None:
    """The seq a cursor points after, None for the first page."""
    if not cursor:
        return None
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        digits = text[1:]
        if not text.startswith("s") or not digits.isdigit() or len(digits) > 18:
            raise ValueError(text)
        return int(digits)
    except ValueError as exc:
        raise BadCursor("cursor is not valid") from exc


def page(rows: Sequence[Any], limit: int) -> tuple[list[Any], str | None]:
    """Rows fetched with limit+1 -> (the page, the cursor of the next page or None)."""
    items = list(rows[:limit])
    more = len(rows) > limit
    return items, (encode_cursor(_seq(items[-1])) if more and items else None)


def _seq(row: Any) -> int:
    # Typed rows carry `seq` as an attribute; the lists not yet typed return records.
    seq: int = row.seq if hasattr(row, "seq") else row["seq"]
    return seq
