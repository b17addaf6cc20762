"""The performance tests stay out of the default run, and still run: once each, with the timer off."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

import models
from bench.core.timing import MODES

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_perf_tests_run_once_with_benchmark_disabled():
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "tests/perf", "--benchmark-disable", "-q", "-p", "no:cacheprovider"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stdout[-2000:]
    expected = len(models.NAMES) * len(MODES) * 2
    assert re.search(rf"\b{expected} passed\b", done.stdout), done.stdout[-500:]


@pytest.mark.slow  # a second pytest process collecting every test: 6 s of the default run's 90
def test_the_default_run_deselects_them(pytestconfig):
    collected = subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    ).stdout
    assert "tests/perf/test_perf.py" not in collected and "deselected" in collected
