"""Typed rows: the store returns frozen dataclasses, never the driver's records."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Protocol, TypeVar

T = TypeVar("T")


class Sequenced(Protocol):
    """A row of a paged list: pages are keyed on its `seq`."""

    @property
    def seq(self) -> int: ...


def row_of(cls: type[T], record: Any) -> T:
    """One record as `cls`; its columns are exactly the dataclass's fields."""
    return cls(**dict(record.items()))


def rows_of(cls: type[T], records: Iterable[Any]) -> list[T]:
    """Records as a list of `cls`."""
    return [row_of(cls, record) for record in records]
