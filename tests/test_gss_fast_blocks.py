"""models.gss_fast's blocked position-wise part (autograd off, CPU): the same outputs as gss for any block
length, FLOPs as executed, and no (B, L, E) tensor held."""

import pytest
import torch

from bench.core.flops import count_flops
from bench.core.memory import _cpu_peak_bytes
from models.gss_fast import FastGSS
from tests.test_gss_fast import SMALL, pair, rel


@pytest.mark.parametrize("block_rows", [1, 5, 64])
@pytest.mark.parametrize("batch,seq_len", [(1, 1), (1, 7), (1, 100), (3, 50)])
@pytest.mark.parametrize("reverse_seq", [False, True])
def test_blocks_match_gss(block_rows, batch, seq_len, reverse_seq):
    ref, fast = pair(reverse_seq=reverse_seq)
    fast.block_rows = block_rows
    x = torch.randn(batch, seq_len, SMALL["dim"])
    expected = ref(x)
    with torch.inference_mode():
        got = fast(x)
    assert got.shape == expected.shape and got.is_contiguous()
    assert rel(got, expected) < 1e-5
    with torch.no_grad():  # the cached spectrum, and the same blocks again
        assert rel(fast(x), expected) < 1e-5


def test_blocks_match_gss_in_float64():
    ref, fast = pair(dtype=torch.float64)
    fast.block_rows = 9
    x = torch.randn(2, 77, SMALL["dim"], dtype=torch.float64)
    with torch.no_grad():
        assert rel(fast(x), ref(x)) < 1e-12


def test_blocks_under_autocast_match_gss():
    ref, fast = pair()
    x = torch.randn(2, 60, SMALL["dim"])
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        expected = ref(x)
        whole = fast(x)
        fast.block_rows = 16
        got = fast(x)
    assert got.dtype == whole.dtype == expected.dtype == torch.float32
    assert rel(got, expected) < 2e-2
    assert rel(got, whole) < 1e-2  # the same bfloat16 products, in blocks


def test_block_length():
    fast = FastGSS(**SMALL)
    assert fast.block_length(torch.empty(1, 5000, SMALL["dim"])) == 1024
    assert fast.block_length(torch.empty(3, 5000, SMALL["dim"])) == 341
    assert fast.block_length(torch.empty(4096, 10, SMALL["dim"])) == 1
    assert fast.block_length(torch.empty(2, 5000, SMALL["dim"], device="meta")) == 5000  # not the CPU: whole


def test_blocked_flops_as_executed():
    _, fast = pair()
    fast.block_rows = 7
    x = torch.randn(2, 30, SMALL["dim"])
    with torch.no_grad():
        fast(x)
        assert count_flops(lambda: fast(x)) == pytest.approx(fast.flops(2, 30, cached=True), abs=4)


def test_blocks_hold_no_hidden_tensor():
    """Whole, the forward holds u and W_g's output, two (B, L, E) tensors, at once; in blocks it holds none."""
    _, fast = pair(dim=32, dim_expansion_factor=8)  # E = 256
    B, L, E = 1, 512, 256
    x = torch.randn(B, L, 32)
    with torch.no_grad():
        fast(x)  # fill the kernel cache
        fast.block_rows = L
        whole = _cpu_peak_bytes(lambda: fast(x))
        fast.block_rows = 64
        blocked = _cpu_peak_bytes(lambda: fast(x))
    hidden, block = B * L * E * 4, 64 * 4
    assert whole >= 2 * hidden
    # in their place: a block of u and of W_g's output, W_o's block, and the output written block by block
    # (whole, W_o's output is the layer's)
    assert blocked <= whole - 2 * hidden + 2 * block * E + block * 32 + B * L * 32 * 4
