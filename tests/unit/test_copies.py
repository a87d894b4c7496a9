"""The layout of `serve --workers N` / `worker --processes N` copies (hookyard/copies.py)."""

from __future__ import annotations

import pytest

from hookyard.copies import available_cpus, copy_ports, resolve_count


def test_each_copy_gets_its_own_metrics_ports_next_to_the_configured_ones() -> None:
    assert copy_ports((9100, 9101), 3) == [[9100, 9101], [9102, 9103], [9104, 9105]]


def test_a_port_that_is_off_stays_off_in_every_copy() -> None:
    assert copy_ports((9100, 0), 2) == [[9100, 0], [9101, 0]]
    assert copy_ports((0, 0), 2) == [[0, 0], [0, 0]]


def test_ports_that_two_copies_would_share_are_refused() -> None:
    with pytest.raises(SystemExit, match="overlap"):
        copy_ports((9100, 9102), 2)


def test_zero_processes_means_one_per_available_cpu() -> None:
    assert resolve_count(0) == available_cpus() >= 1
    assert resolve_count(3) == 3


def test_a_negative_number_of_processes_is_refused() -> None:
    with pytest.raises(SystemExit, match="0 \\(one per CPU\\) or more"):
        resolve_count(-1)
