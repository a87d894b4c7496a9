"""The `hookyard` command."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
import uuid
from pathlib import Path
from uuid import UUID

from hookyard import processes
from hookyard.dev import DevPorts, master_keys_file, read_stack, run_dev
from hookyard.gmail_setup import GmailSetup, SetupError, run_setup
from hookyard.processes import keyring_from, new_master_key_line
from ingest.signatures import get_scheme
from oauth.crypto import Keyring
from schemas import db
from schemas.errors import NotFound
from schemas.migrate import migrate
from schemas.store import master_keys as keys
from schemas.store import owners
from schemas.store.owners import create_owner
from settings import Settings, SettingsError, load_settings, parse_master_keys
from telemetry import logs

DEFAULT_DATA_DIR = ".hookyard"
_LISTED_KEYS = 1000


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hookyard", description="Events in, durable automations out.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    dev = sub.add_parser(
        "dev", help="run the whole stack locally (PostgreSQL, Redis, Temporal, api, dispatcher, worker)"
    )
    dev.add_argument("--data-dir", default=DEFAULT_DATA_DIR, help="state lives here (default: %(default)s)")
    dev.add_argument("--port", type=int, default=8000, help="API port (default: %(default)s)")
    dev.add_argument("--postgres-port", type=int, default=55432)
    dev.add_argument("--redis-port", type=int, default=56379)
    dev.add_argument("--temporal-port", type=int, default=7233)
    dev.add_argument("--temporal-ui-port", type=int, default=8233)
    dev.add_argument("--dispatcher-metrics-port", type=int, default=9100)
    dev.add_argument("--worker-metrics-port", type=int, default=9101)
    dev.add_argument(
        "--app-postgres-port",
        type=int,
        default=None,
        help="the apps reach PostgreSQL on this port, e.g. through a proxy (default: --postgres-port)",
    )

    sub.add_parser("serve", help="run the API and ingest server")
    sub.add_parser("dispatch", help="run the dispatcher")
    sub.add_parser("worker", help="run the Temporal worker")
    sub.add_parser("migrate", help="apply database migrations (idempotent)")

    owners = sub.add_parser("owners", help="manage owners").add_subparsers(dest="owners_command", required=True)
    create = owners.add_parser("create", help="create an owner and print its API key (shown once)")
    create.add_argument("name")
    create.add_argument("--data-dir", default=DEFAULT_DATA_DIR, help="use the `hookyard dev` stack of this data dir")
    owner_keys = owners.add_parser("keys", help="an owner's API keys").add_subparsers(
        dest="keys_command", required=True
    )
    for name, text in (
        ("list", "list an owner's API keys (never the keys themselves)"),
        ("create", "create an API key and print it (shown once)"),
        ("revoke", "revoke one of an owner's API keys"),
    ):
        cmd = owner_keys.add_parser(name, help=text)
        cmd.add_argument("owner", metavar="OWNER", help="owner id, or name if unique")
        if name == "create":
            cmd.add_argument("--name", default="default", help="a label to recognise the key by")
        if name == "revoke":
            cmd.add_argument("key_id", metavar="KEY_ID", help="the key's id, from `hookyard owners keys list`")
        cmd.add_argument("--data-dir", default=DEFAULT_DATA_DIR, help="use the `hookyard dev` stack of this data dir")

    sign = sub.add_parser("sign", help="print signature headers for a body (for trying endpoints with curl)")
    sign.add_argument("--secret", required=True, help="the endpoint's secret")
    sign.add_argument("--body", required=True, help="the exact body you will send")
    sign.add_argument("--scheme", default="standard-webhooks")
    sign.add_argument("--curl", action="store_true", help="print as curl -H arguments")

    keys = sub.add_parser("keys", help="master keys").add_subparsers(dest="keys_command", required=True)
    generate = keys.add_parser("generate", help="print a new master key entry for HOOKYARD_MASTER_KEYS")
    generate.add_argument("--id", default="k1", help="key id (default: %(default)s)")
    for name, text in (
        ("rotate", "re-encrypt every stored secret under the primary (first) master key; resumable"),
        ("status", "how many stored secrets each master key protects"),
    ):
        cmd = keys.add_parser(name, help=text)
        cmd.add_argument("--data-dir", default=DEFAULT_DATA_DIR, help="use the `hookyard dev` stack of this data dir")

    gmail = sub.add_parser("gmail", help="Gmail push").add_subparsers(dest="gmail_command", required=True)
    setup = gmail.add_parser("setup", help="create the Pub/Sub topic, Gmail's publish right and the push subscription")
    setup.add_argument("--project", required=True, help="Google Cloud project id")
    setup.add_argument("--topic", required=True, help="topic id, e.g. gmail-push")
    setup.add_argument("--push-endpoint", required=True, help="https://<hookyard>/ingest/pubsub/gmail")
    setup.add_argument("--service-account", required=True, help="service account whose OIDC token signs pushes")
    setup.add_argument("--subscription", default="", help="subscription id (default: <topic>-hookyard-push)")
    setup.add_argument("--audience", default="", help="token audience (default: the push endpoint)")
    return parser


def _settings() -> Settings:
    try:
        return load_settings()
    except SettingsError as exc:
        raise SystemExit(f"configuration error: {exc}") from None


def _database_url(data_dir: str) -> str:
    """DATABASE_URL if set, else the running dev stack's for this data dir."""
    if os.environ.get("DATABASE_URL"):
        return os.environ["DATABASE_URL"]
    stack = read_stack(Path(data_dir))
    if stack is None:
        raise SystemExit(
            f"no running `hookyard dev` stack in {data_dir!r} and DATABASE_URL is not set; "
            "start one with `make run` or pass --data-dir"
        )
    return stack["database_url"]


async def _create_owner(url: str, name: str) -> tuple[str, str]:
    conn = await db.connect(url)
    try:
        owner_id, key = await create_owner(conn, name)
    finally:
        await conn.close()
    return str(owner_id), key


async def _owner_keys(url: str, args: argparse.Namespace) -> int:
    conn = await db.connect(url)
    try:
        found = await owners.find_owner(conn, args.owner)
        if not found:
            raise SystemExit(f"no owner with id or name {args.owner!r}")
        if len(found) > 1:
            ids = ", ".join(str(row.id) for row in found)
            raise SystemExit(f"{len(found)} owners are named {args.owner!r}; pass one of their ids: {ids}")
        owner_id, owner_name = found[0].id, found[0].name
        if args.keys_command == "create":
            row, key = await owners.create_key(conn, owner_id, args.name)
            print(
                f"API key {row.name!r} created for owner {owner_name!r}\n  id:      {row.id}\n  API key: {key}\n"
                "The key is shown once; store it now. Use it as: Authorization: Bearer <key>"
            )
            return 0
        if args.keys_command == "revoke":
            try:
                key_id = UUID(args.key_id)
            except ValueError:
                raise SystemExit(
                    f"{args.key_id!r} is not a key id; see `hookyard owners keys list {args.owner}`"
                ) from None
            try:
                outcome = await owners.revoke_key(conn, owner_id, key_id)
            except NotFound:
                raise SystemExit(f"owner {owner_name!r} has no key {key_id}") from None
            print(f"key {key_id} {'was already revoked' if outcome is owners.Revoked.ALREADY else 'revoked'}")
            if not await owners.active_keys(conn, owner_id):
                print(
                    f"warning: owner {owner_name!r} has no active key left; "
                    "create one with `hookyard owners keys create`"
                )
            return 0
        rows = await owners.list_keys(conn, owner_id, limit=_LISTED_KEYS)
    finally:
        await conn.close()
    print(f"API keys of owner {owner_name!r} ({owner_id}), newest first:")
    if not rows:
        print("  none")
    for row in rows[:_LISTED_KEYS]:
        state = f"revoked {row.revoked_at:%Y-%m-%d %H:%M}" if row.revoked_at else "active"
        print(f"  {row.id}  {row.prefix}…  {row.name!r}  created {row.created_at:%Y-%m-%d %H:%M}  {state}")
    if len(rows) > _LISTED_KEYS:
        print(f"  ... only the newest {_LISTED_KEYS} are shown")
    return 0


def _sign(scheme_name: str, secret: str, body: str, curl: bool) -> int:
    try:
        scheme = get_scheme(scheme_name)
    except ValueError as exc:
        raise SystemExit(str(exc)) from None
    headers = scheme.sign(body.encode(), secret, now=time.time(), msg_id=f"msg_{uuid.uuid4().hex}")
    headers["content-type"] = "application/json"
    for name, value in headers.items():
        print(f"-H {name}:{value.replace(' ', '')}" if curl else f"{name}: {value}", end=" " if curl else "\n")
    if curl:
        print()
    return 0


def _keyring_for(data_dir: str) -> Keyring:
    settings = _settings()
    if not settings.master_keys and (Path(data_dir) / "master.keys").exists():
        settings = settings.replace(master_keys=parse_master_keys(master_keys_file(Path(data_dir)).read_text()))
    return keyring_from(settings)


async def _keys(command: str, data_dir: str) -> int:
    keyring = _keyring_for(data_dir)
    conn = await db.connect(_database_url(data_dir))
    try:
        if command == "rotate":
            print(f"re-wrapping secrets under primary key {keyring.primary_id!r}")
            done = await keys.rotate(
                conn,
                keyring,
                progress=lambda label, n: print(f"  {label}: {n}", flush=True),
                on_error=lambda label, row_id, exc: print(f"  {label}: cannot re-wrap {row_id}: {exc}", flush=True),
            )
            print(f"done: {sum(done.values())} secret(s) re-wrapped")
        status = await keys.key_status(conn)
    finally:
        await conn.close()
    print("secrets per master key:")
    for label, counts in status.items():
        shown = ", ".join(f"{kid}={n}" for kid, n in counts.items()) or "none"
        print(f"  {label}: {shown}")
    retired = sorted({kid for counts in status.values() for kid in counts} - set(keyring.key_ids))
    if retired:
        print(f"warning: secrets under keys missing from the keyring: {', '.join(retired)}")
    old = [kid for kid in keyring.key_ids[1:] if not any(kid in counts for counts in status.values())]
    if old:
        print(f"no secret uses {', '.join(old)} any more; it can be removed from the keyring")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Run one `hookyard` command; a configuration error ends it with a message naming the setting."""
    args = _parser().parse_args(argv)
    try:
        return _run(args)
    except SettingsError as exc:
        raise SystemExit(f"configuration error: {exc}") from None


def _run(args: argparse.Namespace) -> int:
    if args.command == "dev":
        logs.configure("WARNING")
        ports = DevPorts(
            args.port,
            args.postgres_port,
            args.redis_port,
            args.temporal_port,
            args.temporal_ui_port,
            args.dispatcher_metrics_port,
            args.worker_metrics_port,
            args.app_postgres_port,
        )
        return run_dev(Path(args.data_dir), ports)
    if args.command == "owners" and args.owners_command == "keys":
        return asyncio.run(_owner_keys(_database_url(args.data_dir), args))
    if args.command == "owners":
        owner_id, key = asyncio.run(_create_owner(_database_url(args.data_dir), args.name))
        print(
            f"owner {args.name!r} created\n  id:      {owner_id}\n  API key: {key}\n"
            "The key is shown once; store it now. Use it as: Authorization: Bearer <key>"
        )
        return 0
    if args.command == "sign":
        return _sign(args.scheme, args.secret, args.body, args.curl)
    if args.command == "keys" and args.keys_command == "generate":
        print(new_master_key_line(args.id))
        return 0
    if args.command == "keys":
        return asyncio.run(_keys(args.keys_command, args.data_dir))
    if args.command == "gmail":
        try:
            run_setup(
                GmailSetup(
                    args.project,
                    args.topic,
                    args.push_endpoint,
                    args.service_account,
                    args.subscription,
                    args.audience,
                )
            )
        except SetupError as exc:
            raise SystemExit(f"gmail setup failed: {exc}") from None
        return 0
    settings = _settings()
    logs.configure(settings.log_level, settings.log_json, args.command)
    if args.command == "migrate":
        applied = asyncio.run(migrate(settings.database_url))
        print(f"applied: {', '.join(applied)}" if applied else "database is up to date")
        return 0
    {"serve": processes.serve, "dispatch": processes.dispatch, "worker": processes.worker}[args.command](settings)
    return 0


if __name__ == "__main__":
    sys.exit(main())
