"""The slow references beside the fast paths in models/: checked by hand, then every fast path (FFT and direct
convolution, the DSS, every registered layer, SDPA) against them on outputs, input gradients and parameter
gradients, at the tolerance of its dtype."""

import copy
import math

import pytest
import torch
import torch.nn.functional as F

import models
from models.attention import attention_ref
from models.chunked import chunked_attention_block_ref
from models.dss import dss_layer_ref
from models.gss import dss_recurrence_ref, dss_ref
from models.ops import causal_conv_ref, direct_conv, fft_conv
from tests.compare import (
    DIM,
    DTYPES,
    SMALL,
    assert_close,
    assert_paths_agree,
    layer_forward,
    layer_output_and_grads,
    output_and_grads,
    small_layer,
)


def test_every_registered_model_has_small_options_and_a_reference():
    assert set(SMALL) == set(models.NAMES) == set(REFERENCE_FORWARD)


# ---- the references themselves, by hand ----


def test_causal_conv_ref_by_hand():
    u = torch.tensor([1.0, 2.0, 3.0]).reshape(1, 3, 1)
    K = torch.tensor([1.0, 10.0]).reshape(2, 1)
    assert causal_conv_ref(u, K).flatten().tolist() == [1.0, 12.0, 23.0]  # y_t = u_t + 10 u_{t-1}


def test_dss_recurrence_ref_by_hand():
    """One mode decaying by a half per step, C' = 1: y_t = sum_k 0.5^(t - k) u_k."""
    Lambda = torch.tensor([complex(math.log(0.5), 0.0)], dtype=torch.complex128)
    C = torch.ones(1, 1, dtype=torch.complex128)
    u = torch.tensor([1.0, 0.0, 0.0, 2.0], dtype=torch.float64).reshape(1, 4, 1)
    y = dss_recurrence_ref(u, Lambda, C).flatten()
    assert torch.allclose(y, torch.tensor([1.0, 0.5, 0.25, 2.125], dtype=torch.float64), rtol=0, atol=1e-12)


def test_attention_ref_with_equal_scores_is_the_running_mean_of_the_values():
    v = torch.randn(2, 3, 7, 4, dtype=torch.float64)
    q = k = torch.zeros_like(v)  # every score 0: uniform weights over the causal prefix
    running_mean = v.cumsum(dim=2) / torch.arange(1, 8, dtype=torch.float64)[:, None]
    assert torch.allclose(attention_ref(q, k, v), running_mean, rtol=0, atol=1e-12)


# ---- fast paths against their references: outputs, input gradients and parameter gradients ----


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("L,T", [(1, 1), (2, 1), (17, 17), (40, 7), (64, 64)])
def test_fft_and_direct_convolution_match_the_tap_by_tap_reference(dtype, L, T):
    torch.manual_seed(L * 100 + T)
    u, K = torch.randn(2, L, 5, dtype=dtype), torch.randn(T, 5, dtype=dtype)
    u64, K64 = (t.double().requires_grad_() for t in (u, K))
    reference = output_and_grads(causal_conv_ref(u64, K64), dict(u=u64, K=K64))
    paths = {
        "fft": lambda u, K: fft_conv(u, F.pad(K, (0, 0, 0, L - T))),  # T taps, zero-padded to L
        "direct": direct_conv,
    }
    for path, conv in paths.items():
        u, K = (t.detach().requires_grad_() for t in (u, K))
        assert_paths_agree(output_and_grads(conv(u, K), dict(u=u, K=K)), reference, f"{path} {dtype}")


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("lambda_imag_exp", [True, False])
@pytest.mark.parametrize("L,N,H", [(1, 4, 3), (2, 1, 1), (17, 8, 5), (64, 16, 8), (101, 3, 7)])
def test_dss_fft_and_direct_match_the_float64_recurrence(dtype, lambda_imag_exp, L, N, H):
    torch.manual_seed(L * 100 + N)
    fft = models.DSS(dim=H, kernel_N=N, dss_kernel_lambda_imag_exp=lambda_imag_exp, dtype=dtype)
    direct = models.DSS(dim=H, kernel_N=N, dss_kernel_lambda_imag_exp=lambda_imag_exp, conv_mode="direct", dtype=dtype)
    direct.load_state_dict(fft.state_dict(), strict=True)
    x = torch.randn(2, L, H, dtype=dtype)
    K = fft.kernel(L)
    assert K.shape == (L, H) and K.dtype == dtype
    reference = layer_output_and_grads(dss_ref, copy.deepcopy(fft).double(), x.double())
    for conv_mode, dss in (("fft", fft), ("direct", direct)):
        fast = layer_output_and_grads(layer_forward, dss, x)
        assert_paths_agree(fast, reference, f"DSS {conv_mode} {dtype}")


def test_direct_conv_truncated_to_conv_kernel_taps_is_the_reference_on_the_first_taps():
    torch.manual_seed(0)
    layer = models.build_layer("gss-direct", dim=DIM, dtype=torch.float64, kernel_N=8, kernel_H=12, conv_kernel=5)
    assert layer.dss.taps(40) == 5 and layer.dss.taps(3) == 3
    v = torch.randn(2, 40, 12, dtype=torch.float64)
    u = layer.dss.norm(v)
    expected = causal_conv_ref(u, layer.dss.kernel(40)[:5]) + u * layer.dss.param_D
    assert_close(layer.dss(v), expected, "DSS with 5 taps")


def gated_unit_ref(mixer_ref):
    """A gated unit's forward with its mixer replaced by the mixer's reference."""

    def forward(layer, x):
        u, v = layer._project(x)
        return layer._gate(mixer_ref(layer.mixer, v), u, x)

    return forward


def learned_conv_ref(conv, x):
    u = conv.norm(x)
    return causal_conv_ref(u, conv.weight) + u * conv.param_D


def attention_block_ref(block, x):
    q, k, v = block._qkv(x, start=0)
    return block._out(x, attention_ref(q, k, v))


REFERENCE_FORWARD = {  # every registered layer with its fast path replaced by the slow reference
    "gss": gated_unit_ref(dss_ref),
    "gss-fast": gated_unit_ref(dss_ref),
    "gss-direct": gated_unit_ref(dss_ref),
    "conv": gated_unit_ref(learned_conv_ref),
    "attention": attention_block_ref,
    "dss": dss_layer_ref,
    "attention-chunked": chunked_attention_block_ref,
}


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("name", models.NAMES)
def test_layer_matches_its_float64_reference_on_outputs_and_gradients(name, dtype):
    layer = small_layer(name, dtype=dtype)
    x = torch.randn(2, 33, DIM, dtype=dtype)
    reference = layer_output_and_grads(REFERENCE_FORWARD[name], copy.deepcopy(layer).double(), x.double())
    fast = layer_output_and_grads(layer_forward, layer, x)
    assert_paths_agree(fast, reference, f"{name} {dtype}")


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("L", [1, 9, 64])
def test_sdpa_matches_the_explicit_softmax_reference(dtype, L):
    torch.manual_seed(L)
    q, k, v = (t.requires_grad_() for t in torch.randn(3, 2, 2, L, 8, dtype=dtype))  # (B, heads, L, hd) each
    q64, k64, v64 = (t.detach().double().requires_grad_() for t in (q, k, v))
    reference = output_and_grads(attention_ref(q64, k64, v64), dict(q=q64, k=k64, v=v64))
    fast = output_and_grads(F.scaled_dot_product_attention(q, k, v, is_causal=True), dict(q=q, k=k, v=v))
    assert_paths_agree(fast, reference, f"SDPA {dtype}")
