"""Owners' database credentials: URL reading, hookyard's own database, errors without secrets."""

from __future__ import annotations

import asyncio
import ssl
from urllib.parse import quote

import asyncpg
import pytest
from hypothesis import given
from hypothesis import strategies as st

from actions.egress import LOOPBACK, EgressPolicy
from actions.owner_db import OwnerDbBounds, OwnerDbError, check_connect, describe_error, own_database, target_of
from oauth.providers import PROVIDERS, PostgresUrlError, postgres_target

# A marker around any text, so a password cannot be a word the messages use anyway ("failed").
passwords = st.text(max_size=30).filter(lambda p: p.isprintable() and " " not in p).map(lambda p: f"Pw~{p}~9")


@given(passwords)
def test_the_password_is_read_whatever_it_contains_and_never_shown_by_repr(password: str) -> None:
    target = postgres_target({"url": f"postgresql://app:{quote(password, safe='')}@db.example.com:6543/shop"})
    assert (target.host, target.port, target.user, target.database) == ("db.example.com", 6543, "app", "shop")
    assert target.password == password
    assert password not in repr(target)


@given(passwords)
def test_no_error_description_names_the_password(password: str) -> None:
    target = postgres_target({"url": f"postgresql://app:{quote(password, safe='')}@db.example.com/shop"})
    bounds = OwnerDbBounds()
    errors: list[BaseException] = [
        asyncpg.InvalidPasswordError('password authentication failed for user "app"'),
        asyncpg.InvalidCatalogNameError('database "shop" does not exist'),
        ConnectionRefusedError(111, "Connection refused"),
        TimeoutError(),
        ssl.SSLError(1, "bad"),
        asyncpg.QueryCanceledError("canceling statement due to statement timeout"),
        RuntimeError(f"something with {password}"),
    ]
    for error in errors:
        assert password not in describe_error(error, target, bounds)


@pytest.mark.parametrize(
    ("secret", "field"),
    [
        ({"url": "postgresql://h/db"}, "url"),  # no user
        ({"url": "postgresql://u@/db"}, "url"),  # no host
        ({"url": "postgresql://u@h1,h2/db"}, "url"),
        ({"url": "postgresql://u@h/db?sslmode=disable"}, "url"),
        ({"url": "postgresql://u@h:99999/db"}, "url"),
        ({"url": "postgresql://u@h/a/b"}, "url"),
        ({"url": "postgresql://u@h/db\n"}, "url"),
        ({"url": "postgresql://u@h/db", "sslmode": "allow"}, "sslmode"),
    ],
)
def test_unusable_urls_name_the_field(secret: dict[str, str], field: str) -> None:
    with pytest.raises(PostgresUrlError) as raised:
        postgres_target(secret)
    assert raised.value.field == field


def test_the_database_defaults_to_the_user_and_the_port_to_5432() -> None:
    target = postgres_target({"url": "postgres://app@db.example.com"})
    assert (target.port, target.database, target.sslmode) == (5432, "app", "prefer")


def test_the_provider_check_uses_the_same_reading() -> None:
    check = PROVIDERS["postgres"].check
    assert check is not None
    assert check({"url": "postgresql://u@h/db"}) is None
    assert check({"url": "mysql://u@h/db"}) == ("url", "must be postgresql://user:password@host[:port]/database")


def test_hookyards_own_database_is_read_from_its_url() -> None:
    assert own_database("postgresql://postgres@127.0.0.1:5433/hookyard") == ("127.0.0.1", 5433, "hookyard")
    assert own_database("postgresql://app@Db.Internal/") == ("db.internal", 5432, "app")


def test_a_stored_secret_that_no_longer_reads_is_an_owner_db_error() -> None:
    with pytest.raises(OwnerDbError, match="credential url"):
        target_of({"url": "nonsense"})


def test_hookyards_own_database_is_refused_under_any_host_spelling() -> None:
    bounds = OwnerDbBounds(connect_timeout_s=1, own_database=("127.0.0.1", 5432, "hookyard"))
    target = postgres_target({"url": "postgresql://postgres:pw@localhost:5432/hookyard"})
    loopback = EgressPolicy(allow=LOOPBACK)
    with pytest.raises(OwnerDbError, match="hookyard's own database"):
        asyncio.run(check_connect(target, loopback, bounds))


def test_a_private_address_is_refused_before_any_connection() -> None:
    target = postgres_target({"url": "postgresql://app:pw@192.168.1.10/shop"})
    with pytest.raises(OwnerDbError, match="private address"):
        asyncio.run(check_connect(target, EgressPolicy(), OwnerDbBounds(connect_timeout_s=1)))
