"""The fault ledger in small (bench/chaos.py --quick): each app process killed once mid-run.

300 signed events from 16 retrying senders through a `hookyard dev` stack of its own; the
api, the dispatcher and the worker are each killed with SIGKILL once. Stalls are the full
run's business (`make chaos`); here: nothing missing, nothing delivered under two keys.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

# It starts a `hookyard dev` stack of its own: real PostgreSQL, Redis and Temporal.
pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parent.parent.parent


def test_killing_each_app_process_once_loses_nothing_and_never_repeats_under_a_new_key():
    argv = [sys.executable, "-m", "bench.chaos", "--quick", "--events", "300", "--senders", "16", "--json"]
    run = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=300)
    ledger = json.loads(run.stdout)
    assert [e["what"] for e in ledger["timeline"] if e["what"].startswith("kill ")] == [
        "kill worker",
        "kill dispatcher",
        "kill api",
    ], run.stderr
    assert ledger["accepted"] == 300
    assert ledger["missing"] == 0, ledger["examples"]
    assert ledger["duplicated_cross_key"] == 0, ledger["examples"]
    assert ledger["delivered_not_matching"] == 0
    assert ledger["expected_executions"] == 450
