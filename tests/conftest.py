"""Keep the performance tests (marked perf, under tests/perf) out of the default run; they run when
tests/perf is named on the command line or a -m expression is given; and the fixtures the suites' tests share."""

import pytest
import torch


def pytest_collection_modifyitems(config, items):
    if config.getoption("markexpr") or any("perf" in str(arg) for arg in config.args):
        return
    perf = [item for item in items if item.get_closest_marker("perf")]
    if perf:
        config.hook.pytest_deselected(items=perf)
        items[:] = [item for item in items if not item.get_closest_marker("perf")]


@pytest.fixture(scope="module")
def restore_threads():
    """Put torch's global thread count back after a module whose suites ran with --threads."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)
