"""pytest-benchmark tests of every registered model's fwd and fwdbwd step (run on demand, see README).

    pytest tests/perf --benchmark-autosave
    pytest tests/perf --benchmark-compare --benchmark-compare-fail=median:10%

Each round runs the suite's own step (bench.core.timing.make_step) and synchronises CUDA before the clock
stops, so GPU times are real.
"""

import pytest
import torch

import models
from bench.core.timing import MODES, make_step

pytestmark = pytest.mark.perf
DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")
DIM = 256
LENGTHS = (256, 2048)


def synchronised(step):
    if DEVICE.type != "cuda":
        return step

    def run():
        step()
        torch.cuda.synchronize(DEVICE)

    return run


@pytest.mark.parametrize("seq_len", LENGTHS)
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("name", models.NAMES)
def test_step(benchmark, name, mode, seq_len):
    torch.manual_seed(0)
    layer = models.build_layer(name, dim=DIM, device=DEVICE)
    step = synchronised(make_step(layer, torch.randn(1, seq_len, DIM, device=DEVICE), mode=mode))
    benchmark.group = f"{mode} L={seq_len}"
    benchmark.extra_info.update(
        model=name, mode=mode, seq_len=seq_len, dim=DIM, device=str(DEVICE), flops=layer.flops(1, seq_len)
    )
    benchmark.pedantic(step, warmup_rounds=1, rounds=5, iterations=1)
