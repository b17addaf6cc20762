"""Assertions shared by the suites' tests, and the test markers."""

# The markers a default run leaves out (tests/conftest.py; perf also runs when tests/perf is named), and those CI
# selects: .ci/run and .github/workflows/cpu.yml run `pytest -m "slow or ray"`. pytest.ini declares the markers in
# this order; tests/test_markers.py holds the three files to these two lists.
DESELECTED = ("perf", "slow", "ray")
CI_MARKERS = ("slow", "ray")


def assert_usage_error(main, argv, out, capsys, message=""):
    """A user's bad input: exit 2, one `error:` line on stderr naming the problem, nothing written to out."""
    assert main([*argv, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and len(err.strip().splitlines()) == 1
    assert not out.exists()


# The smoke preset on one thread: on a shared 2-core machine two OpenMP threads per process thrash (10x slower
# small ops). --threads sets torch's global thread count: use the restore_threads fixture (conftest.py).
SMOKE_ONE_THREAD = ["--preset", "smoke", "--threads", "1"]
