"""Internal inbox sources are declared by the trigger type they serve, and each has a forwarder."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence

import asyncpg
import pytest
from temporalio.client import Client

from ingest import pubsub
from settings import Settings
from triggers import gmail
from triggers.base import InboxEvent
from triggers.registry import TRIGGERS, internal_sources
from worker.dispatch.forwarding import NoForwarder, build_forwarders
from worker.gmail.forwarder import GmailPushForwarder


class _Forwarder:
    def __init__(self, source_type: str) -> None:
        self.source_type = source_type

    async def accept(self, conn: asyncpg.Connection, events: Sequence[InboxEvent]) -> list[bool]:
        return [True for _ in events]

    async def handover(
        self, pool: asyncpg.Pool, connect: Callable[[], Awaitable[Client]], limit: int
    ) -> tuple[int, list[BaseException]]:
        return 0, []


def test_the_gmail_trigger_declares_pushes_as_its_internal_source() -> None:
    assert TRIGGERS[gmail.NAME].internal_source == "gmail.push"
    assert internal_sources() == {"gmail.push"}


def test_pubsub_ingest_stores_pushes_under_the_declared_source_type() -> None:
    assert TRIGGERS[gmail.NAME].internal_source == pubsub.PUSH_SOURCE


def test_no_trigger_type_is_fed_by_an_internal_source() -> None:
    for trigger in TRIGGERS.values():
        assert trigger.source_type not in internal_sources()


def test_the_dispatcher_forwards_every_declared_internal_source() -> None:
    forwarders = build_forwarders(Settings())
    assert set(forwarders) == internal_sources()
    assert isinstance(forwarders["gmail.push"], GmailPushForwarder)


def test_forwarders_for_undeclared_sources_are_left_out() -> None:
    forwarders = build_forwarders(Settings(), [_Forwarder("gmail.push"), _Forwarder("not.declared")])
    assert set(forwarders) == {"gmail.push"}


def test_a_dispatcher_without_a_forwarder_for_a_declared_source_refuses_to_start() -> None:
    with pytest.raises(NoForwarder, match=r"gmail\.push"):
        build_forwarders(Settings(), [])
