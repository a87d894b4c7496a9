"""`hookyard dev`: the whole stack on one machine, supervised as one group.

PostgreSQL, Redis and the Temporal dev server run from their wheels with state in the data dir
(unless DATABASE_URL / REDIS_URL / TEMPORAL_ADDRESS point elsewhere); then migrations, then
the api, dispatcher and worker as child processes. Every process is supervised: an app that
dies is restarted, and so is a server (same data dir, same ports), which the console says.
Ctrl-C or SIGTERM stops the app processes first (they drain), then the servers, and exits 0;
a stop caused by a failure (a server that cannot be brought back) exits 1.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from urllib.parse import quote, urlsplit

from hookyard import services
from hookyard.devui import ReadOnlyUIProxy
from hookyard.processes import new_master_key_line
from schemas.migrate import migrate


@dataclass
class DevPorts:
    """Every port the stack uses; all configurable so two stacks can run side by side."""

    api: int = 8000
    postgres: int = 55432
    redis: int = 56379
    temporal: int = 7233
    temporal_ui: int = 8233
    # Prometheus metrics of the dispatcher and the worker (the api serves its own at /metrics).
    dispatcher_metrics: int = 9100
    worker_metrics: int = 9101
    # The apps reach PostgreSQL on this port when set (a proxy in front of it, e.g. the
    # fault proxy of bench/chaos.py); migrations and the stack file use the server's own.
    app_postgres: int | None = None


# A dead server is started again this many times, waiting longer each time, before the
# stack gives up and exits non-zero.
SERVER_RESTART_ATTEMPTS = 5
SERVER_RESTART_FIRST_WAIT_S = 0.5
# A dead app process is started again after this pause (a lost worker's batch waits for it).
APP_RESTART_WAIT_S = 0.25


@dataclass
class Server:
    """A supervised server (PostgreSQL, Redis, Temporal) and how to start it again."""

    name: str
    proc: services.ManagedProcess
    start: Callable[[], services.ManagedProcess]


STACK_FILE = "stack.json"
# Actions may call receivers on this machine (the README walkthrough), and nothing else private.
DEV_EGRESS_ALLOW = "127.0.0.0/8,::1"
_APP_PROCESSES = ("serve", "dispatch", "worker")


def master_keys_file(data_dir: Path) -> Path:
    """The dev master key, generated once and kept (mode 0600) so secrets stay readable."""
    path = data_dir / "master.keys"
    if not path.exists():
        data_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(new_master_key_line("dev1") + "\n")
    return path


def codec_token_file(data_dir: Path) -> Path:
    """The dev codec server's token, generated once and kept (mode 0600)."""
    path = data_dir / "codec.token"
    if not path.exists():
        data_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(secrets.token_urlsafe(32) + "\n")
    return path


def dev_egress_allow(environ: Mapping[str, str]) -> str:
    """The dev stack's egress exceptions: the environment's own list if it sets one, else loopback."""
    return environ.get("HOOKYARD_EGRESS_ALLOW", DEV_EGRESS_ALLOW)


def dev_egress_deny(ports: Iterable[int], environ: Mapping[str, str]) -> str:
    """Every port the stack listens on, on loopback, plus the environment's own deny list: the
    loopback exception is for receivers, never for Temporal, PostgreSQL, Redis or the metrics."""
    own = [f"{net}:{port}" for port in sorted(set(ports)) for net in ("127.0.0.0/8", "[::1]")]
    extra = environ.get("HOOKYARD_EGRESS_DENY", "").strip()
    return ",".join([*own, extra] if extra else own)


# What an external `temporal server start-dev` also listens on by default: its HTTP API (which
# takes writes) and its UI.
_TEMPORAL_DEFAULT_SIDE_PORTS = (7243, 8233)


def external_ports(environ: Mapping[str, str]) -> set[int]:
    """Ports of servers named by the environment (PostgreSQL, Redis, Temporal, metrics)."""
    ports: set[int] = set()
    for name in ("DATABASE_URL", "REDIS_URL"):
        if environ.get(name):
            with contextlib.suppress(ValueError):
                ports.add(urlsplit(environ[name]).port or 0)
    address = environ.get("TEMPORAL_ADDRESS", "")
    if address.rpartition(":")[2].isdigit():
        ports |= {int(address.rpartition(":")[2]), *_TEMPORAL_DEFAULT_SIDE_PORTS}
    for name in ("HOOKYARD_METRICS_PORT", "HOOKYARD_TEMPORAL_METRICS_PORT"):
        if environ.get(name, "").isdigit():
            ports.add(int(environ[name]))
    ports.discard(0)
    return ports


def egress_summary(allow: str) -> str:
    """What actions of the dev stack may reach, for its banner."""
    return f"public addresses + {allow}" if allow.strip() else "public addresses only"


def read_stack(data_dir: Path) -> dict[str, str] | None:
    """URLs of the `hookyard dev` stack running on this data dir, if any."""
    path = data_dir / STACK_FILE
    if not path.exists():
        return None
    stack: dict[str, str] = json.loads(path.read_text())
    return stack


class Supervisor:
    """Starts, watches and stops the stack's processes."""

    def __init__(self, data_dir: Path, ports: DevPorts) -> None:
        self.data_dir = data_dir.resolve()
        self.ports = ports
        self.infra: list[Server] = []
        self.apps: dict[str, services.ManagedProcess] = {}
        self.env: dict[str, str] = {}
        self.ui_proxy: ReadOnlyUIProxy | None = None
        # Every port the stack's servers and apps listen on; actions may never reach them.
        self.own_ports: set[int] = {
            ports.api,
            ports.postgres,
            ports.redis,
            ports.temporal,
            ports.temporal_ui,
            ports.dispatcher_metrics,
            ports.worker_metrics,
            *([ports.app_postgres] if ports.app_postgres else []),
        }
        self._stopping = False
        self.codec_token_path = codec_token_file(self.data_dir)
        self.codec_token = self.codec_token_path.read_text().strip()

    def start_infra(self) -> dict[str, str]:
        """Start each server not replaced by an environment variable; returns the URLs."""
        urls = {}
        env = os.environ
        # Servers the environment points at are the stack's too: actions may not reach them.
        self.own_ports |= external_ports(env)
        if env.get("DATABASE_URL"):
            urls["database_url"] = env["DATABASE_URL"]
        else:
            _say(f"starting PostgreSQL on port {self.ports.postgres}")
            self._add_server("postgres", lambda: services.start_postgres(self.data_dir, self.ports.postgres))
            urls["database_url"] = f"postgresql://postgres@127.0.0.1:{self.ports.postgres}/postgres"
        if env.get("REDIS_URL"):
            urls["redis_url"] = env["REDIS_URL"]
        else:
            _say(f"starting Redis on port {self.ports.redis}")
            self._add_server("redis", lambda: services.start_redis(self.data_dir, self.ports.redis))
            urls["redis_url"] = f"redis://127.0.0.1:{self.ports.redis}/0"
        if env.get("TEMPORAL_ADDRESS"):
            urls["temporal_address"] = env["TEMPORAL_ADDRESS"]
        else:
            _say(f"starting Temporal dev server on port {self.ports.temporal}")
            # Fixed once, so a restarted server comes back on the same ports. The UI listens
            # on an internal port behind the read-only proxy (hookyard/devui.py).
            http_port, metrics_port, ui_port = services.free_port(), services.free_port(), services.free_port()
            self.own_ports |= {http_port, metrics_port, ui_port}
            self._add_server(
                "temporal",
                lambda: services.start_temporal(
                    self.data_dir, self.ports.temporal, ui_port, http_port=http_port, metrics_port=metrics_port
                ),
            )
            urls["temporal_address"] = f"127.0.0.1:{self.ports.temporal}"
            # The Temporal UI cannot send a codec token header, so its endpoint carries the
            # token; the proxy hands it to the UI's browser, never through an argv.
            codec = f"http://127.0.0.1:{self.ports.api}/codec/ui/{quote(self.codec_token, safe='')}"
            try:
                self.ui_proxy = ReadOnlyUIProxy(self.ports.temporal_ui, ui_port, codec)
            except OSError as exc:
                raise services.ServiceError(f"Temporal UI port {self.ports.temporal_ui}: {exc}") from exc
            self.ui_proxy.start()
            urls["temporal_ui"] = f"http://127.0.0.1:{self.ports.temporal_ui}"
        return urls

    def _add_server(self, name: str, start: Callable[[], tuple[services.ManagedProcess, str]]) -> None:
        def start_proc() -> services.ManagedProcess:
            return start()[0]

        self.infra.append(Server(name, start_proc(), start_proc))

    def start_apps(self, urls: dict[str, str]) -> None:
        """Start api, dispatcher and worker with the stack's settings in their environment."""
        ui = self.ports.temporal_ui
        database_url = urls["database_url"]
        if self.ports.app_postgres:
            database_url = database_url.replace(f":{self.ports.postgres}/", f":{self.ports.app_postgres}/", 1)
        self.env = {
            **os.environ,
            "DATABASE_URL": database_url,
            "REDIS_URL": urls["redis_url"],
            "TEMPORAL_ADDRESS": urls["temporal_address"],
            "HOOKYARD_PORT": str(self.ports.api),
            "HOOKYARD_MASTER_KEYS_FILE": str(master_keys_file(self.data_dir)),
            "HOOKYARD_CODEC_AUTH_TOKEN": self.codec_token,
            "HOOKYARD_CODEC_CORS_ORIGINS": f"http://127.0.0.1:{ui},http://localhost:{ui}",
            "HOOKYARD_EGRESS_ALLOW": dev_egress_allow(os.environ),
            "HOOKYARD_EGRESS_DENY": dev_egress_deny(self.own_ports, os.environ),
            # The console links executions to their runs in the dev Temporal UI (when it runs here).
            "HOOKYARD_TEMPORAL_UI_URL": os.environ.get("HOOKYARD_TEMPORAL_UI_URL", urls.get("temporal_ui", "")),
        }
        for name in _APP_PROCESSES:
            self.apps[name] = self._spawn_app(name)

    def _spawn_app(self, name: str) -> services.ManagedProcess:
        argv = [sys.executable, "-m", "hookyard.cli", name]
        env = dict(self.env)
        metrics_port = {"dispatch": self.ports.dispatcher_metrics, "worker": self.ports.worker_metrics}.get(name)
        if metrics_port is not None:
            env["HOOKYARD_METRICS_PORT"] = str(metrics_port)
        proc = subprocess.Popen(argv, env=env, start_new_session=True)  # noqa: S603
        return services.ManagedProcess(name, proc, Path("-"))

    def watch(self) -> bool:
        """Restart processes that die; return when asked to stop (True) or on a failure (False)."""
        while not self._stopping:
            for server in self.infra:
                if not server.proc.alive() and not self._stopping and not self._restart_server(server):
                    return False
            for name, proc in list(self.apps.items()):
                if not proc.alive() and not self._stopping:
                    _say(f"{name} exited with {proc.process.returncode}; restarting")
                    time.sleep(APP_RESTART_WAIT_S)
                    self.apps[name] = self._spawn_app(name)
            time.sleep(0.5)
        return True

    def _restart_server(self, server: Server) -> bool:
        """Start a dead server again on its data dir and ports; False if it will not come back."""
        code = server.proc.process.returncode
        _say(f"{server.name} died (exit code {code}); restarting it with the same data dir and port")
        # Whatever the dead leader left in its group (PostgreSQL backends hold its shared
        # memory and would stop a new postmaster) goes first.
        server.proc.kill()
        wait = SERVER_RESTART_FIRST_WAIT_S
        for attempt in range(1, SERVER_RESTART_ATTEMPTS + 1):
            began = time.monotonic()
            try:
                server.proc = server.start()
            except (services.ServiceError, OSError, subprocess.SubprocessError) as exc:
                _say(f"{server.name} restart {attempt}/{SERVER_RESTART_ATTEMPTS} failed: {exc}")
                if self._stopping:
                    return True
                time.sleep(wait)
                wait *= 2
                continue
            _say(f"{server.name} is back after {time.monotonic() - began:.1f}s")
            return True
        _say(f"{server.name} could not be restarted; see {server.proc.log_path}. Shutting down.")
        return False

    def request_stop(self, signum: int, frame: FrameType | None) -> None:
        """Signal handler: leave the watch loop."""
        self._stopping = True

    def stop(self) -> None:
        """Stop the app processes (they drain), then the servers, then forget the stack file."""
        self._stopping = True
        for proc in self.apps.values():
            if proc.alive():
                proc.terminate()
        for proc in self.apps.values():
            proc.stop(timeout=40)
        if self.ui_proxy is not None:
            self.ui_proxy.stop()
        for server in reversed(self.infra):
            server.proc.stop()
        (self.data_dir / STACK_FILE).unlink(missing_ok=True)


def run_dev(data_dir: Path, ports: DevPorts) -> int:
    """Bring the stack up, print its URLs, supervise until interrupted."""
    sup = Supervisor(data_dir, ports)
    signal.signal(signal.SIGTERM, sup.request_stop)
    signal.signal(signal.SIGINT, sup.request_stop)
    clean = False
    try:
        urls = sup.start_infra()
        applied = asyncio.run(migrate(urls["database_url"]))
        _say(f"migrations applied: {', '.join(applied) or 'none pending'}")
        sup.start_apps(urls)
        api = f"http://127.0.0.1:{ports.api}"
        stack = {
            **urls,
            "metrics": f"{api}/metrics, http://127.0.0.1:{ports.dispatcher_metrics}/metrics (dispatcher), "
            f"http://127.0.0.1:{ports.worker_metrics}/metrics (worker)",
            "api": api,
            "data_dir": str(sup.data_dir),
            "codec_token_file": str(sup.codec_token_path),
            "egress": egress_summary(sup.env["HOOKYARD_EGRESS_ALLOW"]) + ", never the stack's own ports",
        }
        (sup.data_dir / STACK_FILE).write_text(json.dumps(stack, indent=2))
        _banner(stack)
        clean = sup.watch()
    except services.ServiceError as exc:
        _say(f"could not start: {exc}")
        return 1
    finally:
        _say("stopping")
        sup.stop()
    # A stop caused by a failure must not look like a clean one to whoever runs the stack.
    return 0 if clean else 1


def _banner(stack: dict[str, str]) -> None:
    lines = [
        "",
        "hookyard is running",
        f"  API            {stack['api']}   (openapi: {stack['api']}/api/openapi.json)",
        f"  console        {stack['api']}/console   (sign in with an owner's API key)",
        f"  Temporal UI    {stack.get('temporal_ui', '(external Temporal)')}",
        f"  Temporal       {stack['temporal_address']}",
        f"  PostgreSQL     {stack['database_url']}",
        f"  Redis          {stack['redis_url']}",
        f"  metrics        {stack['metrics']}",
        f"  data dir       {stack['data_dir']}",
        f"  codec server   {stack['api']}/codec   (the Temporal UI decodes payloads through it)",
        f"  codec token    {stack['codec_token_file']}",
        f"  egress         {stack['egress']}   (where actions may connect; HOOKYARD_EGRESS_ALLOW)",
        "",
        f"  create an owner:  hookyard owners create NAME --data-dir {stack['data_dir']}",
        f"  decrypted history: temporal workflow show -w ID --address {stack['temporal_address']} \\",
        f"                       --codec-endpoint {stack['api']}/codec \\",
        f'                       --codec-auth "Bearer $(cat {stack["codec_token_file"]})"',
        "  stop:             Ctrl-C",
        "",
    ]
    print("\n".join(lines), flush=True)


def _say(message: str) -> None:
    print(f"hookyard dev: {message}", flush=True)
