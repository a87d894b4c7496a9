"""Several copies of one process under a small parent: `serve --workers N`, `worker --processes N`.

The parent forks the copies before it has started anything (no threads, no event loop, no
connections, no telemetry), so each copy starts as cleanly as a separately started process
and sets up its own. The parent then only supervises:

- SIGTERM or SIGINT: every copy gets SIGTERM once and drains as a single process would (the
  api finishes in-flight requests, the worker its running activities); the parent exits when
  all have, 0 if every copy stopped cleanly.
- A copy that dies while nothing asked it to stop is started again after a pause (longer each
  time it dies young), like `hookyard dev` restarts a dead app.
- Each copy asks the kernel for SIGTERM when the parent dies (Linux), so a killed parent
  leaves no orphans: they drain and exit, and whoever restarts the parent starts fresh ones.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import signal
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from types import FrameType

log = logging.getLogger(__name__)

_RESTART_DELAY_S = 0.5
_MAX_RESTART_DELAY_S = 10.0
# A copy that lived this long counts as healthy: its next restart waits the shortest pause again.
_HEALTHY_AFTER_S = 10.0
_PR_SET_PDEATHSIG = 1


def available_cpus() -> int:
    """CPUs this process may use: its affinity, capped by a cgroup v2 CPU quota (containers).

    `os.cpu_count()` reports the host's cores even in a pod limited to one; the quota in
    /sys/fs/cgroup/cpu.max (e.g. "200000 100000" = 2 CPUs) is what the pod really gets.
    """
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    with contextlib.suppress(OSError, ValueError):
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
        if quota != "max":
            cpus = min(cpus, max(1, -(-int(quota) // int(period))))  # rounded up
    return max(1, cpus)


def resolve_count(count: int) -> int:
    """A configured number of copies: 0 means one per available CPU."""
    if count < 0:
        raise SystemExit(f"the number of processes must be 0 (one per CPU) or more, not {count}")
    return count if count > 0 else available_cpus()


def copy_ports(ports: Sequence[int], count: int) -> list[list[int]]:
    """The listening ports of each of `count` copies: copy i gets each port + i * (ports in use).

    0 stays 0 (off). With the default neighbours 9100 and 9101, copy 1 gets 9102 and 9103.
    Refuses (SystemExit) a layout where two copies would share a port.
    """
    stride = max(1, sum(1 for p in ports if p))
    layout = [[p + i * stride if p else 0 for p in ports] for i in range(count)]
    used = [p for copy in layout for p in copy if p]
    if len(used) != len(set(used)):
        raise SystemExit(f"ports {list(ports)} overlap across {count} processes; set them further apart")
    return layout


def run_copies(count: int, copy: Callable[[int], None], name: str) -> int:
    """Run `copy(index)` in `count` forked processes until SIGTERM/SIGINT; returns the exit code.

    Call before anything else is started in this process (see the module docstring).
    """
    parent = os.getpid()
    children: dict[int, tuple[int, float]] = {}  # pid -> (index, started at)
    delays = dict.fromkeys(range(count), _RESTART_DELAY_S)
    stopping = False
    failed = False

    def stop(signum: int, frame: FrameType | None) -> None:
        nonlocal stopping
        if not stopping:
            log.info("%s: stopping %d process(es)", name, len(children))
        stopping = True
        for pid in list(children):
            _signal(pid, signal.SIGTERM)

    def start(index: int) -> None:
        pid = os.fork()
        if pid == 0:
            _run_child(parent, index, copy)
        children[pid] = (index, time.monotonic())
        if stopping:  # the stop signal came while this copy was being forked
            _signal(pid, signal.SIGTERM)

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        for index in range(count):
            start(index)
        log.info("%s: %d processes started", name, count)
        while children:
            pid, status = os.wait()  # retried after a signal handler runs (PEP 475)
            if pid not in children:
                continue
            index, started = children.pop(pid)
            code = os.waitstatus_to_exitcode(status)
            if stopping:
                failed = failed or code != 0
                continue
            lived = time.monotonic() - started
            delay = _RESTART_DELAY_S if lived >= _HEALTHY_AFTER_S else delays[index]
            delays[index] = min(delay * 2, _MAX_RESTART_DELAY_S)
            log.warning("%s process %d died (exit code %d); restarting it in %.1fs", name, index, code, delay)
            time.sleep(delay)  # resumed after a signal handler runs; `stopping` says whether to go on
            if not stopping:
                start(index)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 1 if failed else 0


def _run_child(parent: int, index: int, copy: Callable[[int], None]) -> None:
    """The forked copy: never returns into the parent's code."""
    code = 1
    try:
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, signal.SIG_DFL)  # the copy installs its own
        _die_with_parent(parent)
        copy(index)
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except BaseException:
        traceback.print_exc()
    finally:
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def _die_with_parent(parent: int) -> None:
    """SIGTERM this process when the parent dies (Linux); exit now if it already has."""
    if sys.platform == "linux":
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != parent:
        raise SystemExit(0)


def _signal(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError):  # already gone; os.wait() reports it
        os.kill(pid, sig)
