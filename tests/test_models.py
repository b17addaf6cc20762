"""Models against the upstream package and the papers: state_dict and outputs both ways, parameter counts by hand,
the attention head rule, causality, independence, low-precision parameters and bad arguments. (The slow
references beside the fast paths: tests/test_references.py.)"""

import copy

import pytest
import torch

import models
from models.attention import attention_ref, rotary
from tests import compare
from tests.compare import (
    DIM,
    DTYPES,
    assert_close,
    assert_paths_agree,
    layer_forward,
    layer_output_and_grads,
)

SMALL = compare.LM_SMALL  # the small options of every model, LM-level ones included
small_layer = compare.small_layer


def test_every_model_has_small_options():
    assert set(SMALL) == set(models.LM_NAMES)


# ---- faithfulness to gated-state-spaces-pytorch 0.1.0 ----


@pytest.fixture(scope="module")
def upstream():
    return pytest.importorskip("gated_state_spaces_pytorch")


@pytest.mark.parametrize("lambda_imag_exp", [True, False])
def test_gss_matches_upstream_both_ways(upstream, lambda_imag_exp):
    kw = dict(dim=32, dss_kernel_N=16, dss_kernel_H=24, dss_kernel_lambda_imag_exp=lambda_imag_exp)
    torch.manual_seed(0)
    theirs, ours = upstream.GSS(**kw), models.GSS(**kw)
    ours.load_state_dict(theirs.state_dict(), strict=True)
    x = torch.randn(3, 45, 32)
    assert_close(ours(x), theirs(x), "GSS, their weights")
    torch.manual_seed(1)
    ours = models.GSS(**kw)
    theirs.load_state_dict(ours.state_dict(), strict=True)
    assert_close(ours(x), theirs(x), "GSS, our weights")


@pytest.mark.parametrize("lambda_imag_exp", [True, False])
def test_dss_matches_upstream(upstream, lambda_imag_exp):
    torch.manual_seed(0)
    theirs = upstream.gss.DSS(dim=24, kernel_N=16, dss_kernel_lambda_imag_exp=lambda_imag_exp)
    ours = models.DSS(dim=24, kernel_N=16, dss_kernel_lambda_imag_exp=lambda_imag_exp)
    ours.load_state_dict(theirs.state_dict(), strict=True)
    x = torch.randn(2, 33, 24)
    assert_close(ours(x), theirs(x), "DSS")


@pytest.mark.parametrize("lambda_imag_exp", [True, False])
def test_lm_cross_entropy_matches_upstream(upstream, lambda_imag_exp):
    kw = dict(
        num_tokens=50, dim=32, depth=2, dss_kernel_N=16, dss_kernel_H=24, dss_kernel_lambda_imag_exp=lambda_imag_exp
    )
    torch.manual_seed(0)
    theirs, ours = upstream.GatedStateSpacesLM(**kw), models.GatedStateSpacesLM(**kw)
    ours.load_state_dict(theirs.state_dict(), strict=True)
    ids, labels = torch.randint(0, 50, (2, 40)), torch.randint(0, 50, (2, 40))
    assert_close(ours(ids, labels), theirs(ids, labels), "LM cross-entropy")
    assert_close(ours(ids), theirs(ids), "LM logits")
    # the registry's LM is the same network
    registry_lm = models.build_lm(
        "gss", num_tokens=50, dim=32, depth=2, kernel_N=16, kernel_H=24, lambda_imag_exp=lambda_imag_exp
    )
    registry_lm.load_state_dict(theirs.state_dict(), strict=True)
    assert_close(registry_lm(ids), theirs(ids), "registry LM logits")


def test_parameter_counts_match_upstream(upstream):
    kw = dict(dim=32, dss_kernel_N=16, dss_kernel_H=24)
    assert models.GSS(**kw).num_params() == sum(p.numel() for p in upstream.GSS(**kw).parameters())
    lm_kw = dict(num_tokens=50, depth=2, **kw)
    assert models.GatedStateSpacesLM(**lm_kw).num_params() == sum(
        p.numel() for p in upstream.GatedStateSpacesLM(**lm_kw).parameters()
    )


# ---- properties of every registered layer and LM ----

_E, _H, _N, _T = 4 * DIM, 12, 8, 5  # SMALL: hidden width dim_expansion_factor * dim, kernel_H, kernel_N, conv_kernel
_UNIT = 2 * DIM + DIM * _E + DIM * _H + _H * _E + _E * DIM + DIM  # norm, W_u, W_v, W_g, W_o and its bias
_MLP = 2 * DIM + (DIM * 4 * DIM + 4 * DIM) + (4 * DIM * DIM + DIM)  # norm, W_1, W_2 (both biased)
PARAMS = {  # counted by hand from the papers' layers
    "gss": _UNIT + 2 * _H + 2 * _N + 2 * _H * _N + _H,  # DSS: norm, Lambda re/im, C re/im, D
    "gss-fast": _UNIT + 2 * _H + 2 * _N + 2 * _H * _N + _H,  # the same parameters as gss
    "gss-direct": _UNIT + 2 * _H + 2 * _N + 2 * _H * _N + _H,
    "conv": _UNIT + 2 * _H + _T * _H + _H,  # norm, taps, D
    "attention": 2 * DIM + 3 * DIM * DIM + DIM * DIM + _MLP,
    "dss": 2 * DIM + 2 * _N + 2 * DIM * _N + DIM + DIM + (DIM * DIM + DIM) + _MLP,  # DSS (norm ... D, Delta), W_o
    "attention-chunked": 2 * DIM + 3 * DIM * DIM + DIM * DIM + _MLP,  # attention's parameters
}


@pytest.mark.parametrize("name", models.NAMES)
def test_parameter_count_is_the_hand_count(name):
    assert small_layer(name).num_params() == PARAMS[name]
    lm = models.build_lm(name, num_tokens=20, dim=DIM, depth=2, **SMALL[name])
    assert lm.num_params() == 2 * 20 * DIM + 2 * PARAMS[name]  # embedding, layers, logits: no final norm


def test_attention_parameter_count_is_within_ten_percent_of_gss_at_dim_512():
    gss = models.build_layer("gss", dim=512, device="meta").num_params()
    attention = models.build_layer("attention", dim=512, device="meta").num_params()
    assert 2.9e6 < gss < 3.1e6
    assert abs(attention - gss) <= 0.10 * gss
    assert models.build_layer("attention", dim=512, device="meta").heads == 8  # head dim 64


# The default head rule, by hand: heads of the largest even divisor of dim that is at most max(2, min(64, dim // 4)).
DEFAULT_HEADS = {  # dim: (heads, head width)
    2: (1, 2),
    4: (2, 2),
    16: (4, 4),
    32: (4, 8),
    36: (6, 6),
    40: (4, 10),
    48: (4, 12),
    64: (4, 16),
    96: (4, 24),
    100: (5, 20),
    128: (4, 32),
    130: (5, 26),
    200: (4, 50),
    256: (4, 64),
    320: (5, 64),
    512: (8, 64),
    1024: (16, 64),
}
OLD_DEFAULT_HEADS = {16: 1, 36: 1, 64: 1, 100: 1, 130: 1, 200: 2, 256: 4, 512: 8}  # the rule before issue 12


@pytest.mark.parametrize("dim", DEFAULT_HEADS)
def test_default_heads_by_hand(dim):
    layer = models.build_layer("attention", dim=dim, device="meta")
    assert (layer.heads, dim // layer.heads) == DEFAULT_HEADS[dim]


def test_default_head_width_is_the_largest_even_divisor_up_to_min_64_or_dim_over_4():
    for dim in range(2, 2050, 2):
        width = dim // models.attention.resolve_heads(dim)
        target = max(2, min(64, dim // 4))
        assert width % 2 == 0 and dim % width == 0 and width <= target, dim
        assert all(dim % w for w in range(width + 2, target + 1, 2)), dim  # no wider even divisor fits
        if dim >= 256 and dim % 64 == 0:
            assert width == 64, dim


@pytest.mark.parametrize("dim", OLD_DEFAULT_HEADS)
def test_default_heads_keep_the_parameter_count(dim):
    """Heads split the same projections: the count is the hand count, as with the old rule's heads."""
    layer = models.build_layer("attention", dim=dim, device="meta")
    old = models.build_layer("attention", dim=dim, heads=OLD_DEFAULT_HEADS[dim], device="meta")
    assert layer.heads != OLD_DEFAULT_HEADS[dim] or dim >= 256
    assert layer.num_params() == old.num_params() == 12 * dim * dim + 9 * dim  # norms 4d, qkv+out 4d^2, MLP 8d^2+5d
    lm = models.build_lm("attention", num_tokens=256, dim=dim, depth=2, device="meta")
    assert lm.num_params() == 2 * 256 * dim + 2 * (12 * dim * dim + 9 * dim)


def attention_block_per_head_ref(block, x):
    """The attention block with every head computed on its own: head i takes channels i*hd, ..., (i+1)*hd - 1 of
    the query, key and value projections, and the heads' outputs are concatenated in order before to_out."""
    hd = block.dim // block.heads
    h = block.norm_attn(x)
    w_q, w_k, w_v = block.to_qkv.weight.chunk(3, dim=0)  # (dim, dim) each
    outputs = []
    for i in range(block.heads):
        rows = slice(i * hd, (i + 1) * hd)
        q, k, v = (h @ w[rows].T for w in (w_q, w_k, w_v))  # (B, L, hd)
        outputs.append(attention_ref(rotary(q[:, None]), rotary(k[:, None]), v[:, None])[:, 0])
    x = x + block.to_out(torch.cat(outputs, dim=-1))  # (B, L, dim)
    return x + block.mlp(block.norm_mlp(x))


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("dim", [64, 36, 100])
def test_default_multi_head_attention_matches_the_per_head_reference(dim, dtype):
    torch.manual_seed(dim)
    layer = models.build_layer("attention", dim=dim, dtype=dtype)
    assert layer.heads == DEFAULT_HEADS[dim][0] > 1
    x = torch.randn(2, 33, dim, dtype=dtype)
    reference = layer_output_and_grads(attention_block_per_head_ref, copy.deepcopy(layer).double(), x.double())
    fast = layer_output_and_grads(layer_forward, layer, x)
    assert_paths_agree(fast, reference, f"attention dim {dim} ({layer.heads} heads) {dtype}")
    one_head = models.build_layer("attention", dim=dim, heads=1, dtype=dtype)
    one_head.load_state_dict(layer.state_dict())
    with torch.no_grad():  # the heads matter: the same weights as one head give another output
        assert (one_head(x) - layer(x)).abs().max() > 1e-3


@pytest.mark.parametrize("name", models.NAMES)
def test_layer_is_causal(name):
    layer = small_layer(name)
    x = torch.randn(2, 30, DIM, dtype=torch.float64)
    for t in (0, 11, 28):
        changed = x.clone()
        changed[:, t + 1 :] = torch.randn_like(changed[:, t + 1 :])
        y, y_changed = layer(x), layer(changed)
        assert torch.allclose(y[:, : t + 1], y_changed[:, : t + 1], rtol=0, atol=1e-10)
        assert not torch.allclose(y[:, t + 1 :], y_changed[:, t + 1 :])


@pytest.mark.parametrize("name", models.LM_NAMES)
def test_lm_is_causal_and_returns_loss(name):
    torch.manual_seed(0)
    lm = models.build_lm(name, num_tokens=20, dim=DIM, depth=2, dtype=torch.float64, **SMALL[name])
    ids = torch.randint(0, 20, (2, 25))
    changed = ids.clone()
    changed[:, 13:] = (changed[:, 13:] + 1) % 20
    logits, logits_changed = lm(ids), lm(changed)
    assert logits.shape == (2, 25, 20)
    assert torch.allclose(logits[:, :13], logits_changed[:, :13], rtol=0, atol=1e-10)
    loss = lm(ids, ids)
    expected = torch.nn.functional.cross_entropy(logits.reshape(-1, 20), ids.reshape(-1))
    assert abs(loss.item() - expected.item()) <= 1e-12


@pytest.mark.parametrize("name", models.NAMES)
def test_batch_elements_are_independent(name):
    layer = small_layer(name)
    x = torch.randn(3, 20, DIM, dtype=torch.float64)
    changed = x.clone()
    changed[1] = torch.randn_like(changed[1])
    y, y_changed = layer(x), layer(changed)
    assert torch.allclose(y[0], y_changed[0], rtol=0, atol=1e-12)
    assert torch.allclose(y[2], y_changed[2], rtol=0, atol=1e-12)
    assert_close(layer(x[2:3]), y[2:3], "batch of one")


@pytest.mark.parametrize("name", models.NAMES)
def test_state_dict_round_trip(name):
    a, b = small_layer(name, seed=0), small_layer(name, seed=1)
    x = torch.randn(2, 9, DIM, dtype=torch.float64)
    assert not torch.allclose(a(x), b(x))
    b.load_state_dict(a.state_dict(), strict=True)
    assert torch.equal(a(x), b(x))


@pytest.mark.parametrize("name", models.NAMES)
@pytest.mark.parametrize("seq_len", [1, 33])
def test_smoke_forward_backward_gives_finite_gradients(name, seq_len):
    layer = small_layer(name, dtype=torch.float32)
    x = torch.randn(2, seq_len, DIM, requires_grad=True)
    y = layer(x)
    assert y.shape == x.shape and torch.isfinite(y).all()
    y.square().mean().backward()
    grads = [p.grad for p in layer.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("name", ["gss", "gss-direct", "dss"])
def test_low_precision_parameters_run_and_stay_close_to_float32(name, dtype):
    """Parameters in float16/bfloat16 (not autocast): the DSS kernel is computed in complex64, the output
    comes back in the parameters' dtype, and the step mode agrees with the forward."""
    reference = small_layer(name, dtype=torch.float32)
    layer = small_layer(name, dtype=dtype)
    layer.load_state_dict({k: v.to(dtype) for k, v in reference.state_dict().items()})
    x = torch.randn(2, 24, DIM)
    y = layer(x.to(dtype))
    assert y.dtype == dtype
    assert_close(y, reference(x), f"{dtype} parameters against float32")
    state = layer.init_state(2)
    steps = []
    for t in range(x.shape[1]):
        y_t, state = layer.step(x[:, t].to(dtype), state)
        steps.append(y_t)
    assert_close(torch.stack(steps, 1), y, f"{dtype} step against forward")


# ---- bad arguments ----


@pytest.mark.parametrize(
    "call,match",
    [
        (lambda: models.build_layer("mamba", dim=8), "unknown model 'mamba'; valid models: gss"),
        (lambda: models.build_layer("gss", dim=0), "dim must be a positive integer"),
        (lambda: models.build_layer("gss", dim=-3), "dim must be a positive integer"),
        (lambda: models.build_layer("gss", dim=8, kernel_N=0), "kernel_N must be a positive integer"),
        (lambda: models.build_layer("conv", dim=8, conv_kernel=0), "conv_kernel must be a positive integer"),
        (lambda: models.build_layer("gss-direct", dim=8, conv_kernel=-1), "conv_kernel must be a positive integer"),
        (lambda: models.build_layer("gss", dim=8, conv_kernel=4), "does not take option.*valid options: kernel_N"),
        (lambda: models.build_layer("attention", dim=8, kernel_N=4), "does not take option"),
        (lambda: models.build_layer("gss", dim=8, lambda_imag_exp="yes"), "lambda_imag_exp must be true or false"),
        (lambda: models.build_layer("attention", dim=48, head_dim=64), "head_dim must be a positive divisor"),
        (lambda: models.build_lm("gss", num_tokens=0, dim=8, depth=1), "num_tokens must be a positive integer"),
        (lambda: models.build_lm("conv", num_tokens=8, dim=8, depth=1, conv_kernel=0), "conv_kernel"),
        (lambda: models.build_layer("gss", dim=16, dim_expansion_factor=0.01), "dim_expansion_factor \\* dim must be"),
        (lambda: models.build_layer("gss", dim=16, dim_expansion_factor=float("inf")), "positive finite number"),
        (lambda: models.build_layer("attention", dim=3), "attention needs an even dim"),
        (lambda: models.GSS(dim=8, conv_mode="direct", conv_kernel=0), "conv_kernel must be None or a positive"),
        (lambda: models.GSS(dim=8, conv_kernel=5), "with conv_mode='fft'"),
        (lambda: models.conv.LearnedConv(dim=8, conv_kernel=0), "conv_kernel must be a positive integer"),
    ],
)
def test_bad_arguments_raise_value_error(call, match):
    with pytest.raises(ValueError, match=match):
        call()


@pytest.mark.parametrize("name", models.NAMES)
def test_empty_sequence_raises_value_error(name):
    layer = small_layer(name)
    with pytest.raises(ValueError, match="empty sequence"):
        layer(torch.zeros(2, 0, DIM, dtype=torch.float64))
