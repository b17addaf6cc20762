import importlib
import math

import pytest
import torch
import torch.nn.functional as F

import bench.core.flops as flops
import models
from bench.core.flops import attention_flops, count_flops, count_flops_by_op, fft_flops
from tests.compare import LM_SMALL


def test_linear_forward_and_backward():
    layer = torch.nn.Linear(64, 32, bias=True)
    x = torch.randn(4, 10, 64)
    fwd = 2 * 40 * 64 * 32
    assert count_flops(lambda: layer(x)) == fwd
    x.requires_grad_(True)
    assert count_flops(lambda: layer(x).sum().backward()) == 3 * fwd


def test_real_and_complex_mm():
    m, k, n = 6, 5, 7
    a, b = torch.randn(m, k), torch.randn(k, n)
    assert count_flops(lambda: a @ b) == 2 * m * n * k  # a real multiply and add per (i, j, l)
    ac, bc = a.to(torch.cfloat), b.to(torch.cfloat)
    assert count_flops(lambda: ac @ bc) == 8 * m * n * k  # a complex multiply-add is 4 real multiplies, 4 adds
    assert count_flops(lambda: torch.bmm(ac.expand(3, m, k), bc.expand(3, k, n))) == 3 * 8 * m * n * k


def test_complex_einsum():
    H, N, L = 4, 8, 16
    C = torch.randn(H, N, dtype=torch.cfloat)
    S = torch.randn(N, L, dtype=torch.cfloat)
    assert count_flops(lambda: torch.einsum("h n, n l -> l h", C, S)) == 8 * H * N * L


def test_rfft_irfft_c2c():
    B, L, H = 3, 32, 5
    n = 2 * L
    u = torch.randn(B, L, H)
    expected = B * H * 2.5 * n * math.log2(n)
    assert count_flops(lambda: torch.fft.rfft(u, n=n, dim=-2)) == expected == fft_flops(n, count=B * H)
    X = torch.fft.rfft(u, n=n, dim=-2)
    assert X.shape == (B, L + 1, H)
    assert count_flops(lambda: torch.fft.irfft(X, n=n, dim=-2)) == expected
    z = torch.randn(B, n, H, dtype=torch.cfloat)
    assert count_flops(lambda: torch.fft.fft(z, dim=1)) == B * H * 5 * n * math.log2(n)
    assert fft_flops(n, count=B * H, complex_input=True) == 2 * expected


def test_fft_backward():
    # rfft's backward is a full-length c2c (2x its forward), irfft's an r2c (1x): 1 + 2 + 1 + 1 = 5 real-FFT units.
    B, L, H = 2, 16, 3
    n = 2 * L
    u = torch.randn(B, L, H, requires_grad=True)
    by_op = count_flops_by_op(lambda: torch.fft.irfft(torch.fft.rfft(u, n=n, dim=-2), n=n, dim=-2).sum().backward())
    unit = fft_flops(n, count=B * H)
    assert by_op == {"aten._fft_r2c": 2 * unit, "aten._fft_c2r": unit, "aten._fft_c2c": 2 * unit}


def test_fft_multidim_uses_total_length():
    x = torch.randn(2, 8, 16, dtype=torch.cfloat)
    assert count_flops(lambda: torch.fft.fft2(x)) == fft_flops(128, count=2, complex_input=True)


B, HEADS, L, D = 2, 4, 128, 16


def _qkv(requires_grad=False):
    return [torch.randn(B, HEADS, L, D, requires_grad=requires_grad) for _ in range(3)]


def test_sdpa_cpu_dense_and_causal():
    q, k, v = _qkv()
    dense = 4 * B * HEADS * L * L * D
    assert count_flops(lambda: F.scaled_dot_product_attention(q, k, v)) == dense
    assert count_flops(lambda: F.scaled_dot_product_attention(q, k, v, is_causal=True)) == dense // 2
    assert attention_flops(batch=B, heads=HEADS, q_len=L, kv_len=L, head_dim=D, causal=True) == dense // 2


def test_sdpa_cpu_causal_forward_backward():
    q, k, v = _qkv(requires_grad=True)
    by_op = count_flops_by_op(lambda: F.scaled_dot_product_attention(q, k, v, is_causal=True).sum().backward())
    fwd = 2 * B * HEADS * L * L * D  # half of the dense 4*B*h*L^2*d
    assert by_op == {
        "aten._scaled_dot_product_flash_attention_for_cpu": fwd,
        "aten._scaled_dot_product_flash_attention_for_cpu_backward": 5 * fwd // 2,
    }
    assert sum(by_op.values()) == 7 * B * HEADS * L * L * D


def test_depthwise_causal_conv1d():
    Bc, H, Lc, K = 2, 6, 50, 7
    x = torch.randn(Bc, H, Lc)
    w = torch.randn(H, 1, K)
    assert count_flops(lambda: F.conv1d(F.pad(x, (K - 1, 0)), w, groups=H)) == 2 * Bc * H * Lc * K


@pytest.mark.parametrize("groups", [1, 3, 6])
def test_conv1d_backward_counts_each_gradient_as_one_forward(groups):
    # torch's own formula ignores groups for the weight gradient (H times too high for depthwise)
    Bc, H, Lc, K = 2, 6, 50, 7
    x = torch.randn(Bc, H, Lc, requires_grad=True)
    w = torch.randn(H, H // groups, K, requires_grad=True)
    forward = 2 * Bc * H * (H // groups) * Lc * K

    def step():
        F.conv1d(F.pad(x, (K - 1, 0)), w, groups=groups).sum().backward()

    assert count_flops(step) == 3 * forward
    x.requires_grad_(False)
    assert count_flops(step) == 2 * forward


def test_reload_and_no_global_side_effects():
    before = dict(torch.utils.flop_counter.flop_registry)
    importlib.reload(flops)
    assert torch.utils.flop_counter.flop_registry == before
    assert flops.count_flops(lambda: torch.randn(3, 4) @ torch.randn(4, 5)) == 2 * 3 * 4 * 5


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_sdpa_cuda_causal_halves():
    q, k, v = [t.cuda().half() for t in _qkv()]
    dense = 4 * B * HEADS * L * L * D
    assert count_flops(lambda: F.scaled_dot_product_attention(q, k, v, is_causal=True)) == dense // 2


@pytest.mark.parametrize("name", models.LM_NAMES)
@pytest.mark.parametrize("seq_len", [1, 8, 21])  # 21: two chunks of 8 and a padded one
def test_counted_lm_forward_flops_equal_the_analytic_formula(name, seq_len):
    lm = models.build_lm(name, num_tokens=20, dim=16, depth=2, **LM_SMALL[name])
    ids = torch.randint(0, 20, (2, seq_len))
    with torch.no_grad():
        counted = count_flops(lambda: lm(ids))
    assert counted == pytest.approx(lm.flops(2, seq_len), rel=1e-6)  # FlopCounterMode rounds each FFT to an integer
