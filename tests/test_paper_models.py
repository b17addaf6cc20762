"""The GSS paper's own baselines: the DSS layer (its kernel against the float64 recurrence and against GSS's,
its initialisation), chunked attention (against plain attention chunk by chunk, padding) and the gss-hybrid LM
(placement, registry). Stepping: tests/test_step.py; the registry-wide properties: tests/test_models.py."""

import copy
import math

import pytest
import torch

import models
from models.attention import attention_ref
from models.chunked import chunked_attention_block_ref
from models.dss import DeltaDSS, dss_layer_ref, skew_hippo_eigenvalues
from models.gss import dss_recurrence_ref, dss_ref
from tests.compare import DTYPES, assert_close, assert_paths_agree, layer_forward, layer_output_and_grads

DIM = 16

# ---- dss ----


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("lambda_imag_exp", [False, True])
def test_dss_matches_the_float64_recurrence_on_outputs_and_gradients(dtype, lambda_imag_exp):
    torch.manual_seed(0)
    layer = models.build_layer("dss", dim=DIM, kernel_N=8, lambda_imag_exp=lambda_imag_exp, dtype=dtype)
    x = torch.randn(2, 33, DIM, dtype=dtype)
    for what, module, forward, reference in (
        ("DSS mixer", layer.dss, layer_forward, dss_ref),
        ("dss layer", layer, layer_forward, dss_layer_ref),
    ):
        expected = layer_output_and_grads(reference, copy.deepcopy(module).double(), x.double())
        assert "grad log_dt" in expected or "grad dss.log_dt" in expected
        assert_paths_agree(layer_output_and_grads(forward, module, x), expected, f"{what} {dtype}")


def test_dss_recurrence_ref_by_hand_with_a_step_per_channel():
    """One mode, Lambda = log 0.5; channel 0 steps by Delta = 1 (decay 0.5), channel 1 by Delta = 2 (0.25)."""
    Lambda = torch.tensor([complex(math.log(0.5), 0.0)], dtype=torch.complex128)
    dtLambda = torch.tensor([1.0, 2.0], dtype=torch.float64)[:, None] * Lambda  # (H, N) = (2, 1)
    u = torch.tensor([1.0, 0.0, 2.0], dtype=torch.float64).reshape(1, 3, 1).expand(1, 3, 2)
    y = dss_recurrence_ref(u, dtLambda, torch.ones(2, 1, dtype=torch.complex128))[0]
    expected = torch.tensor([[1.0, 1.0], [0.5, 0.25], [2.25, 2.0625]], dtype=torch.float64)
    assert torch.allclose(y, expected, rtol=0, atol=1e-12)


def test_gss_kernel_is_the_delta_one_formula_bit_for_bit():
    torch.manual_seed(0)
    dss = models.DSS(dim=12, kernel_N=8)
    assert dss.delta() is None and "log_dt" not in dict(dss.named_parameters())
    Lambda = -dss.Lambda_real.exp() + 1j * dss.Lambda_imag.exp()
    C = (dss.C_real + 1j * dss.C_imag) * (Lambda.exp() - 1) / Lambda
    K = torch.einsum("hn,nl->lh", C, (Lambda[:, None] * torch.arange(37)[None, :]).exp()).real
    assert torch.equal(dss.kernel(37), K)


@pytest.mark.parametrize("lambda_imag_exp", [False, True])
def test_dss_with_delta_one_is_the_gss_kernel(lambda_imag_exp):
    torch.manual_seed(0)
    dss = DeltaDSS(dim=12, kernel_N=8, lambda_imag_exp=lambda_imag_exp, dtype=torch.float64)
    gss = models.DSS(dim=12, kernel_N=8, dss_kernel_lambda_imag_exp=lambda_imag_exp, dtype=torch.float64)
    gss.load_state_dict({k: v for k, v in dss.state_dict().items() if k != "log_dt"}, strict=True)
    with torch.no_grad():
        dss.log_dt.zero_()  # Delta = 1
    assert_close(dss.kernel(50), gss.kernel(50), "Delta = 1 against GSS")
    with torch.no_grad():
        dss.log_dt.fill_(math.log(0.5))  # K_Delta[l] = Re sum C (exp(Delta Lambda) - 1) / Lambda exp(Delta Lambda l)
    dtLambda, C = dss.lambda_and_c()
    Lambda = -dss.Lambda_real.exp() + 1j * (dss.Lambda_imag.exp() if lambda_imag_exp else dss.Lambda_imag)
    expected = (dss.C_real + 1j * dss.C_imag) * ((0.5 * Lambda).exp() - 1) / Lambda  # divided by Lambda, not 0.5 Lambda
    torch.testing.assert_close(C, expected, rtol=1e-14, atol=0)
    torch.testing.assert_close(dtLambda, 0.5 * Lambda.expand(12, 8), rtol=1e-15, atol=0)


def test_dss_initialisation():
    torch.manual_seed(0)
    dss = DeltaDSS(dim=512, kernel_N=4)
    delta = dss.delta()
    assert delta.shape == (512,) and 1e-3 <= delta.min() < 1.2e-3 and 0.08 < delta.max() <= 1e-1
    assert abs(dss.log_dt.mean().item() - math.log(1e-2)) < 0.2  # log-uniform: mean log Delta = log 1e-2
    assert torch.equal(dss.Lambda_real, torch.full((4,), math.log(0.5)))  # Re Lambda = -0.5
    expected = skew_hippo_eigenvalues(4).imag.float()
    assert torch.equal(dss.Lambda_imag, expected) and (expected > 0).all()
    assert models.resolve_options("dss") == {"kernel_N": 64, "lambda_imag_exp": False}
    assert not models.build_layer("dss", dim=8, device="meta").dss.dss_kernel_lambda_imag_exp
    imag_exp = DeltaDSS(dim=8, kernel_N=4, lambda_imag_exp=True)
    assert torch.allclose(imag_exp.Lambda_imag.exp(), expected)  # the same Lambda, stored as its log


def test_skew_hippo_eigenvalues_by_hand():
    """N = 1: the skew part of HiPPO-LegS(2) is [[0, -sqrt(3)/2], [sqrt(3)/2, 0]], eigenvalues +-i sqrt(3)/2."""
    assert torch.allclose(skew_hippo_eigenvalues(1), torch.tensor([-0.5 + 0.5j * math.sqrt(3)], dtype=torch.complex128))
    imag = skew_hippo_eigenvalues(16).imag
    assert (imag[:-1] > imag[1:]).all() and (imag > 0).all()


# ---- parameter counts at dim 512, by hand ----

D, E, H, N_GSS, N_DSS = 512, 2048, 256, 512, 64
GSS_512 = 2 * D + D * E + D * H + H * E + E * D + D + (2 * H + 2 * N_GSS + 2 * H * N_GSS + H)  # unit, DSS
MLP_512 = 2 * D + (D * 4 * D + 4 * D) + (4 * D * D + D)  # norm, W_1, W_2 (both biased)
DSS_512 = (2 * D + 2 * N_DSS + 2 * D * N_DSS + D + D) + (D * D + D) + MLP_512  # DSS (norm ... log_dt), W_o, MLP
ATTENTION_512 = 2 * D + 4 * D * D + MLP_512


def test_parameter_counts_at_dim_512_by_hand():
    counts = {
        name: models.build_layer(name, dim=512, device="meta").num_params()
        for name in ("gss", "dss", "attention", "attention-chunked")
    }
    assert counts == {"gss": GSS_512, "dss": DSS_512, "attention": ATTENTION_512, "attention-chunked": ATTENTION_512}
    assert (GSS_512, DSS_512, ATTENTION_512) == (3_017_984, 2_431_104, 3_150_336)
    assert abs(DSS_512 - GSS_512) <= 0.20 * GSS_512  # dss is 19.4% smaller: 9 d^2 against gss's ~11.5 d^2
    hybrid = models.build_lm("gss-hybrid", num_tokens=256, dim=512, depth=4, device="meta")
    assert hybrid.num_params() == 2 * 256 * 512 + 3 * GSS_512 + ATTENTION_512 == 12_466_432


# ---- attention-chunked ----


def small_chunked(chunk, dtype=torch.float64):
    torch.manual_seed(0)
    return models.build_layer("attention-chunked", dim=DIM, head_dim=8, chunk=chunk, dtype=dtype)


def test_chunks_are_the_plain_block_on_each_chunk_and_padding_never_reaches_an_output():
    chunked = small_chunked(8)
    plain = models.build_layer("attention", dim=DIM, head_dim=8, dtype=torch.float64)
    plain.load_state_dict(chunked.state_dict(), strict=True)
    x = torch.randn(2, 2 * 8 + 3, DIM, dtype=torch.float64)  # the last chunk is 3 positions, padded by 5
    y = chunked(x)
    for start in (0, 8, 16):
        assert_close(y[:, start : start + 8], plain(x[:, start : start + 8]), f"chunk at {start}")
    changed = x.clone()
    changed[:, :16] = torch.randn_like(changed[:, :16])  # earlier chunks do not reach the last one
    assert torch.equal(chunked(changed)[:, 16:], y[:, 16:])
    assert torch.equal(chunked(x[:, :10])[:, :8], y[:, :8])  # nor later ones, or padding, an earlier one
    short = small_chunked(64)  # a sequence shorter than a chunk is plain attention
    short.load_state_dict(chunked.state_dict())
    assert_close(short(x), plain(x), "one chunk")


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("L", [1, 5, 8, 19])
def test_chunked_attention_matches_per_chunk_attention_ref_on_outputs_and_gradients(dtype, L):
    layer = small_chunked(8, dtype)
    x = torch.randn(2, L, DIM, dtype=dtype)
    reference = layer_output_and_grads(chunked_attention_block_ref, copy.deepcopy(layer).double(), x.double())
    assert_paths_agree(layer_output_and_grads(layer_forward, layer, x), reference, f"chunked L={L} {dtype}")


def test_chunked_prefill_cache_is_the_last_chunk_with_rotary_from_zero():
    layer = small_chunked(8)
    x = torch.randn(2, 19, DIM, dtype=torch.float64)
    with torch.no_grad():
        _, state = layer.prefill(x, max_len=100)
        q, k, v = layer._qkv(x[:, 16:], start=0)
    assert state.length == 3 and state.k.shape[2] <= 8 and state.limit == 8
    assert torch.equal(state.keys, k) and torch.equal(state.values, v)
    assert attention_ref(q, k, v).shape == (2, 2, 3, 8)


def test_chunk_option_is_validated():
    with pytest.raises(ValueError, match="chunk must be a positive integer"):
        models.build_layer("attention-chunked", dim=DIM, chunk=0)
    with pytest.raises(ValueError, match="chunk must be a positive integer"):
        models.build_lm("gss-hybrid", num_tokens=8, dim=DIM, depth=2, chunk=2.5)
    assert models.resolve_options("attention-chunked") == {"heads": None, "head_dim": None, "chunk": 512}


# ---- gss-hybrid ----


@pytest.mark.parametrize(
    "depth,hybrid_every,attention_at",
    [
        (1, 4, [0]),
        (2, 4, [1]),
        (4, 4, [3]),
        (5, 4, [3]),
        (8, 4, [3, 7]),
        (3, 3, [2]),
        (6, 2, [1, 3, 5]),
        (3, 1, [0, 1, 2]),
        (2, 5, [1]),
    ],
)
def test_hybrid_placement(depth, hybrid_every, attention_at):
    kinds = models.hybrid_layers(depth, hybrid_every)
    assert [i for i, kind in enumerate(kinds) if kind == "attention-chunked"] == attention_at
    assert all(kind == "gss" for i, kind in enumerate(kinds) if i not in attention_at)
    lm = models.build_lm(
        "gss-hybrid",
        num_tokens=8,
        dim=DIM,
        depth=depth,
        hybrid_every=hybrid_every,
        device="meta",
        kernel_N=4,
        kernel_H=8,
        chunk=3,
    )
    assert [type(layer).__name__ for layer in lm.layers] == [
        "ChunkedAttentionBlock" if i in attention_at else "GSS" for i in range(depth)
    ]
    assert all(layer.chunk == 3 for i, layer in enumerate(lm.layers) if i in attention_at)
    assert all(layer.dss.kernel_N == 4 for i, layer in enumerate(lm.layers) if i not in attention_at)


def test_hybrid_defaults_and_names():
    assert models.build_lm("gss-hybrid", num_tokens=8, dim=64, depth=4, device="meta").layers[3].chunk == 512
    assert models.hybrid_layers(4, 4) == ("gss", "gss", "gss", "attention-chunked")
    assert models.NAMES == ("gss", "gss-fast", "gss-direct", "conv", "attention", "dss", "attention-chunked")
    assert (*models.NAMES, "gss-hybrid") == models.LM_NAMES
    assert models.resolve_options("gss-hybrid") == {
        **models.resolve_options("gss"),
        "heads": None,
        "head_dim": None,
        "chunk": 512,
        "hybrid_every": 4,
    }
    assert set(models.options_of("gss-hybrid")) == set(models.options_of("gss")) | {
        "heads",
        "head_dim",
        "chunk",
        "hybrid_every",
    }


@pytest.mark.parametrize(
    "call,match",
    [
        (lambda: models.build_layer("gss-hybrid", dim=DIM), "'gss-hybrid' is an LM-level model.*build_lm"),
        (
            lambda: models.build_lm("gss-hybrid", num_tokens=8, dim=DIM, depth=2, hybrid_every=0),
            "hybrid_every must be a positive integer",
        ),
        (
            lambda: models.build_lm("gss-hybrid", num_tokens=8, dim=DIM, depth=2, conv_kernel=3),
            "does not take option.*conv_kernel",
        ),
        (lambda: models.build_lm("gss-hybrid", num_tokens=8, dim=DIM, depth=2, head_dim=5), "head_dim must be"),
        (lambda: models.build_lm("mamba", num_tokens=8, dim=DIM, depth=2), "valid models: .*gss-hybrid"),
        (lambda: models.LM(num_tokens=8, dim=DIM, depth=2), "exactly one of make_layer and make_layer_at"),
    ],
)
def test_hybrid_bad_arguments_raise_value_error(call, match):
    with pytest.raises(ValueError, match=match):
        call()


@pytest.mark.parametrize("L", [1, 2, 3, 7, 16, 17, 100])
def test_the_blocked_vandermonde_kernel_is_the_materialised_sum(L):
    from models.gss import kernel_blocks, vandermonde_blocks

    torch.manual_seed(L)
    H, N = 3, 5
    dtLambda = torch.complex(-torch.rand(H, N, dtype=torch.float64), torch.randn(H, N, dtype=torch.float64))
    C = torch.complex(torch.randn(H, N, dtype=torch.float64), torch.randn(H, N, dtype=torch.float64))
    S = (dtLambda[..., None] * torch.arange(L)).exp()  # (H, N, L): what the DSS code materialises
    expected = torch.einsum("hn,hnl->lh", C, S).real
    torch.testing.assert_close(vandermonde_blocks(C, dtLambda, L), expected, rtol=1e-12, atol=1e-12)
    blocks, c = kernel_blocks(L)
    assert c * c >= L > (c - 1) * (c - 1) and blocks * c >= L > (blocks - 1) * c


@pytest.mark.parametrize("L", [1, 2, 7, 17, 100])
def test_the_blocked_prefill_state_is_the_materialised_sum(L):
    """dss's state after a prompt, sum_k exp(dtLambda (L - 1 - k)) u_k, without the (H, N, L) exponentials."""
    from models.gss import decayed_sum

    torch.manual_seed(L)
    B, H, N = 2, 3, 5
    dtLambda = torch.complex(-torch.rand(H, N, dtype=torch.float64), torch.randn(H, N, dtype=torch.float64))
    u = torch.randn(B, L, H, dtype=torch.float64)
    S = (dtLambda[..., None] * torch.arange(L - 1, -1, -1)).exp()  # (H, N, L)
    expected = torch.einsum("blh,hnl->bhn", u.to(S.dtype), S)
    torch.testing.assert_close(decayed_sum(dtLambda, u), expected, rtol=1e-12, atol=1e-12)
