"""The test markers and what CI runs, stated once (tests/helpers.py): pytest.ini declares the markers a default run
leaves out, and .ci/run and the CPU workflow select the same ones."""

import configparser
from pathlib import Path

from tests.helpers import CI_MARKERS, DESELECTED

ROOT = Path(__file__).resolve().parent.parent
CI = (ROOT / ".ci" / "run", ROOT / ".github" / "workflows" / "cpu.yml")


def test_pytest_ini_declares_the_markers_a_default_run_leaves_out():
    ini = configparser.ConfigParser()
    ini.read(ROOT / "pytest.ini")
    declared = [line.split(":")[0].strip() for line in ini["pytest"]["markers"].strip().splitlines()]
    assert declared == list(DESELECTED)


def test_ci_runs_the_marked_tests_a_default_run_leaves_out():
    assert set(CI_MARKERS) <= set(DESELECTED)
    expression = f'-m "{" or ".join(CI_MARKERS)}"'
    for path in CI:
        runs = [line for line in path.read_text().splitlines() if "pytest -m" in line]
        assert runs and all(expression in line for line in runs), (path, runs)
