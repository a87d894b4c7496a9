"""`hookyard dev` (what `make run` starts): comes up, serves, stops cleanly, keeps its state."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from hookyard import services


def _start(data_dir: Path, ports: dict[str, int]) -> subprocess.Popen[str]:
    argv = [sys.executable, "-m", "hookyard.cli", "dev", "--data-dir", str(data_dir)]
    for flag, port in ports.items():
        argv += [f"--{flag}", str(port)]
    env = {k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "REDIS_URL", "TEMPORAL_ADDRESS"}}
    return subprocess.Popen(
        argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, start_new_session=True
    )


def _wait_ready(api: str, proc: subprocess.Popen[str], timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
        try:
            if httpx.get(f"{api}/readyz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise AssertionError("hookyard dev did not become ready")


def _stop(proc: subprocess.Popen[str]) -> str:
    os.kill(proc.pid, signal.SIGTERM)
    out, _ = proc.communicate(timeout=90)
    return out


@pytest.fixture
def ports() -> dict[str, int]:
    return {
        name: services.free_port()
        for name in (
            "port",
            "postgres-port",
            "redis-port",
            "temporal-port",
            "temporal-ui-port",
            "dispatcher-metrics-port",
            "worker-metrics-port",
        )
    }


def test_dev_stack_starts_prints_urls_stops_cleanly_and_keeps_state(tmp_path: Path, ports: dict[str, int]):
    api = f"http://127.0.0.1:{ports['port']}"
    proc = _start(tmp_path, ports)
    try:
        _wait_ready(api, proc)
        created = subprocess.run(
            [sys.executable, "-m", "hookyard.cli", "owners", "create", "acme", "--data-dir", str(tmp_path)],
            capture_output=True,
            text=True,
            check=True,
            env={k: v for k, v in os.environ.items() if k != "DATABASE_URL"},
        )
        key = created.stdout.split("API key: ")[1].split()[0]
        assert httpx.get(f"{api}/api/endpoints", headers={"authorization": f"Bearer {key}"}).status_code == 200
        worker_metrics = httpx.get(f"http://127.0.0.1:{ports['worker-metrics-port']}/metrics").text
        assert "# TYPE hookyard_executions_finished_total counter" in worker_metrics
        dispatcher_metrics = httpx.get(f"http://127.0.0.1:{ports['dispatcher-metrics-port']}/metrics").text
        assert "hookyard_inbox_backlog" in dispatcher_metrics
    finally:
        out = _stop(proc)
    assert proc.returncode == 0, out
    assert api in out and f"http://127.0.0.1:{ports['temporal-ui-port']}" in out
    assert not (tmp_path / "stack.json").exists()

    restarted = _start(tmp_path, ports)
    try:
        _wait_ready(api, restarted)
        assert httpx.get(f"{api}/api/endpoints", headers={"authorization": f"Bearer {key}"}).status_code == 200
    finally:
        _stop(restarted)
    assert restarted.returncode == 0
