"""Shared fixtures: the location of ../shared/data and small helpers."""

from __future__ import annotations

import contextlib
import faulthandler
import os
import signal
import sys
import tracemalloc
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import torch

SHARED = Path(__file__).resolve().parents[2] / "shared"
DATA = SHARED / "data"


def shared_path(*parts: str) -> Path:
    """A path under ../shared, or a clean skip naming what is missing."""
    path = SHARED.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"{path} not found: ../shared is absent (CI has it)")
    return path


@pytest.fixture(autouse=True)
def _torch_threads() -> None:
    torch.manual_seed(0)


@pytest.fixture(scope="module")
def one_thread() -> Iterator[None]:
    """One intra-op thread for a module (``pytestmark = pytest.mark.usefixtures("one_thread")``): tiny
    convolutions run faster on one, and two threads crawl when other jobs load the 2-core machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# ------------------------------------------------------------------------------------------ fuzz accounting
# The fuzz tests (tests/test_fuzz_*.py) run each case inside ``fuzz_case``: it counts the case, bounds its time
# (SIGALRM, so a hang fails the case instead of the CI job) and its Python-visible allocations (tracemalloc
# peak, which numpy arrays are part of), and records a failure. ``pytest_terminal_summary`` prints the tally,
# "fuzz: N cases tried, F failures", at the end of the run (in the CI log).


class FuzzTimeout(AssertionError):
    """A fuzz case ran longer than its time limit."""


@dataclass
class FuzzTally:
    """What the fuzz cases of this session did."""

    cases: int = 0
    failures: list[str] = field(default_factory=list)
    known: list[str] = field(default_factory=list)  # failures of cases marked as known bugs (xfail)


FUZZ = FuzzTally()
_HANG_REPORT_FD: int | None = None  # the terminal's stderr, kept before output capture replaces sys.stderr


def pytest_configure(config: pytest.Config) -> None:
    global _HANG_REPORT_FD
    try:
        _HANG_REPORT_FD = os.dup(sys.stderr.fileno())
    except (AttributeError, ValueError, OSError):
        _HANG_REPORT_FD = None


@contextlib.contextmanager
def fuzz_case(
    label: str, *, seconds: float = 20.0, max_bytes: int | None = 256 * 2**20, known_bug: bool = False
) -> Iterator[None]:
    """Run one fuzz case: count it; fail it if it takes more than ``seconds`` or its traced allocations peak
    above ``max_bytes`` (None: not traced, for cases that only run code whose memory is bounded otherwise);
    record any failure (``known_bug`` ones apart) for the end-of-run summary."""
    FUZZ.cases += 1
    started_tracing = max_bytes is not None and not tracemalloc.is_tracing()
    if started_tracing:
        tracemalloc.start()
    tracemalloc.reset_peak()

    def on_alarm(signum: int, frame: object) -> None:
        raise FuzzTimeout(f"fuzz case {label!r} ran longer than {seconds} s")

    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    # SIGALRM is handled between Python bytecodes; a hang inside compiled code ends the process instead,
    # with every thread's traceback, so that CI fails rather than waits
    if _HANG_REPORT_FD is not None:
        faulthandler.dump_traceback_later(seconds + 60, exit=True, file=_HANG_REPORT_FD)
    try:
        yield
        peak = tracemalloc.get_traced_memory()[1] if max_bytes is not None else 0
        if max_bytes is not None and peak > max_bytes:
            raise AssertionError(f"fuzz case {label!r} allocated {peak / 2**20:.0f} MiB (limit {max_bytes >> 20})")
    except BaseException as exc:
        if not isinstance(exc, pytest.skip.Exception):
            (FUZZ.known if known_bug else FUZZ.failures).append(f"{label}: {type(exc).__name__}: {exc}"[:300])
        raise
    finally:
        faulthandler.cancel_dump_traceback_later()
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
        if started_tracing:
            tracemalloc.stop()


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """The fuzz tally, one line (plus the first failures), at the end of the run."""
    if not FUZZ.cases:
        return
    line = f"fuzz: {FUZZ.cases} cases tried, {len(FUZZ.failures)} failures"
    if FUZZ.known:
        line += f" ({len(FUZZ.known)} more in cases marked as known bugs)"
    terminalreporter.write_sep("-", "fuzz summary")
    terminalreporter.write_line(line)
    for failure in FUZZ.failures[:20]:
        terminalreporter.write_line(f"  {failure}")
