"""Keep the performance tests (marked perf, under tests/perf), the slow tests (marked slow: real processes
killed and resumed, nested pytest runs) and the Ray tests (marked ray: a local Ray cluster) out of the default run
(tests.helpers.DESELECTED); they run when a -m expression selects them (CI runs `-m "slow or ray"`) or, for perf,
when tests/perf is named on the command line. And the fixtures the suites' tests share."""

import pytest
import torch

from tests.helpers import DESELECTED


def pytest_configure(config):
    # One torch thread for the whole run: the tests' ops are small, and on a shared 2-core machine two OpenMP
    # threads per process thrash (small ops up to 10x slower). Suites run with --threads reset it (restore_threads).
    torch.set_num_threads(1)


def pytest_collection_modifyitems(config, items):
    if config.getoption("markexpr"):
        return
    markers = [m for m in DESELECTED if not (m == "perf" and any("perf" in str(arg) for arg in config.args))]
    out = [item for item in items if any(item.get_closest_marker(m) for m in markers)]
    if out:
        config.hook.pytest_deselected(items=out)
        items[:] = [item for item in items if item not in out]


@pytest.fixture(scope="module")
def restore_threads():
    """Put torch's global thread count back after a module whose suites ran with --threads."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def synth():
    """The synthetic corpus at seed 0, loaded once for the session (a few seconds to sample)."""
    from bench.perplexity.data import load_corpus

    return load_corpus("synthetic")
