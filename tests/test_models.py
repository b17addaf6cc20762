"""Models against their references: the upstream package, a float64 recurrence, and each other."""

import pytest
import torch

import models
from models.ops import direct_conv, fft_conv

SMALL = {  # tiny but non-trivial options per model, so every test runs in milliseconds
    "gss": dict(kernel_N=8, kernel_H=12),
    "gss-direct": dict(kernel_N=8, kernel_H=12),
    "conv": dict(kernel_H=12, conv_kernel=5),
    "attention": dict(head_dim=8),
}
DIM = 16


def small_layer(name, dtype=torch.float64, seed=0):
    torch.manual_seed(seed)
    return models.build_layer(name, dim=DIM, dtype=dtype, **SMALL[name])


def rel_err(a, b):
    err = ((a - b).norm() / b.norm()).item()
    print(f"relative error {err:.3e}")  # shown by pytest on failure, like mamba's tests
    return err


def test_every_registered_model_has_small_options():
    assert set(SMALL) == set(models.NAMES)


# ---- faithfulness to gated-state-spaces-pytorch 0.1.0 ----

upstream = pytest.importorskip("gated_state_spaces_pytorch")


@pytest.mark.parametrize("lambda_imag_exp", [True, False])
def test_gss_matches_upstream_both_ways(lambda_imag_exp):
    kw = dict(dim=32, dss_kernel_N=16, dss_kernel_H=24, dss_kernel_lambda_imag_exp=lambda_imag_exp)
    torch.manual_seed(0)
    theirs, ours = upstream.GSS(**kw), models.GSS(**kw)
    ours.load_state_dict(theirs.state_dict(), strict=True)
    x = torch.randn(3, 45, 32)
    assert rel_err(ours(x), theirs(x)) <= 1e-5
    torch.manual_seed(1)
    ours = models.GSS(**kw)
    theirs.load_state_dict(ours.state_dict(), strict=True)
    assert rel_err(ours(x), theirs(x)) <= 1e-5


@pytest.mark.parametrize("lambda_imag_exp", [True, False])
def test_dss_matches_upstream(lambda_imag_exp):
    from gated_state_spaces_pytorch.gss import DSS as TheirDSS
    torch.manual_seed(0)
    theirs = TheirDSS(dim=24, kernel_N=16, dss_kernel_lambda_imag_exp=lambda_imag_exp)
    ours = models.DSS(dim=24, kernel_N=16, dss_kernel_lambda_imag_exp=lambda_imag_exp)
    ours.load_state_dict(theirs.state_dict(), strict=True)
    x = torch.randn(2, 33, 24)
    assert rel_err(ours(x), theirs(x)) <= 1e-5


@pytest.mark.parametrize("lambda_imag_exp", [True, False])
def test_lm_cross_entropy_matches_upstream(lambda_imag_exp):
    kw = dict(num_tokens=50, dim=32, depth=2, dss_kernel_N=16, dss_kernel_H=24,
              dss_kernel_lambda_imag_exp=lambda_imag_exp)
    torch.manual_seed(0)
    theirs, ours = upstream.GatedStateSpacesLM(**kw), models.GatedStateSpacesLM(**kw)
    ours.load_state_dict(theirs.state_dict(), strict=True)
    ids, labels = torch.randint(0, 50, (2, 40)), torch.randint(0, 50, (2, 40))
    loss_theirs, loss_ours = theirs(ids, labels), ours(ids, labels)
    assert abs(loss_ours.item() - loss_theirs.item()) <= 1e-5 * abs(loss_theirs.item())
    assert rel_err(ours(ids), theirs(ids)) <= 1e-5
    # the registry's LM is the same network
    registry_lm = models.build_lm("gss", num_tokens=50, dim=32, depth=2, kernel_N=16, kernel_H=24,
                                  lambda_imag_exp=lambda_imag_exp)
    registry_lm.load_state_dict(theirs.state_dict(), strict=True)
    assert rel_err(registry_lm(ids), theirs(ids)) <= 1e-5


# ---- DSS: FFT == direct convolution == float64 recurrence ----

def recurrence(dss, u):
    """s_t = exp(Lambda) s_{t-1} + u_t; y_t = Re(sum_n C'_n s_t), step by step in float64 (B, L, H)."""
    Lambda, C = (t.to(torch.complex128) for t in dss.double().lambda_and_c())
    B, L, H = u.shape
    s = torch.zeros(B, H, Lambda.shape[0], dtype=torch.complex128)
    ys = []
    for t in range(L):
        s = Lambda.exp() * s + u[:, t, :, None]
        ys.append((C * s).sum(-1).real)
    return torch.stack(ys, dim=1)


@pytest.mark.parametrize("lambda_imag_exp", [True, False])
@pytest.mark.parametrize("L,N,H", [(1, 4, 3), (2, 1, 1), (17, 8, 5), (64, 16, 8), (101, 3, 7)])
def test_dss_fft_direct_and_recurrence_agree(lambda_imag_exp, L, N, H):
    torch.manual_seed(L * 100 + N)
    dss = models.DSS(dim=H, kernel_N=N, dss_kernel_lambda_imag_exp=lambda_imag_exp)
    u32 = torch.randn(2, L, H)
    K32 = dss.kernel(L)
    assert K32.shape == (L, H) and K32.dtype == torch.float32
    y_fft, y_direct = fft_conv(u32, K32), direct_conv(u32, K32)
    reference = recurrence(dss, u32.double())
    assert rel_err(y_fft.double(), reference) <= 1e-4
    assert rel_err(y_direct.double(), reference) <= 1e-4
    y64 = fft_conv(u32.double(), dss.double().kernel(L))
    assert rel_err(y64, reference) <= 1e-10


def test_direct_conv_truncates_to_conv_kernel_taps():
    torch.manual_seed(0)
    u, K = torch.randn(2, 40, 5, dtype=torch.float64), torch.randn(40, 5, dtype=torch.float64)
    truncated = K.clone()
    truncated[7:] = 0
    assert rel_err(direct_conv(u, K[:7]), fft_conv(u, truncated)) <= 1e-12


def test_gss_direct_full_taps_equals_gss():
    torch.manual_seed(0)
    gss = models.build_layer("gss", dim=32, kernel_N=16, kernel_H=24)
    direct = models.build_layer("gss-direct", dim=32, kernel_N=16, kernel_H=24)
    direct.load_state_dict(gss.state_dict(), strict=True)
    x = torch.randn(2, 77, 32)
    assert rel_err(direct(x), gss(x)) <= 1e-5


def test_gss_direct_with_few_taps_uses_the_truncated_dss_kernel():
    torch.manual_seed(0)
    layer = models.build_layer("gss-direct", dim=DIM, dtype=torch.float64, kernel_N=8, kernel_H=12, conv_kernel=5)
    assert layer.dss.taps(40) == 5 and layer.dss.taps(3) == 3
    u = torch.randn(2, 40, 12, dtype=torch.float64)
    K = layer.dss.kernel(40)
    K[5:] = 0
    expected = fft_conv(layer.dss.norm(u), K) + layer.dss.norm(u) * layer.dss.param_D
    assert rel_err(layer.dss(u), expected) <= 1e-12


# ---- properties of every registered layer and LM ----

@pytest.mark.parametrize("name", models.NAMES)
def test_layer_is_causal(name):
    layer = small_layer(name)
    x = torch.randn(2, 30, DIM, dtype=torch.float64)
    for t in (0, 11, 28):
        changed = x.clone()
        changed[:, t + 1:] = torch.randn_like(changed[:, t + 1:])
        y, y_changed = layer(x), layer(changed)
        assert torch.allclose(y[:, : t + 1], y_changed[:, : t + 1], rtol=0, atol=1e-10)
        assert not torch.allclose(y[:, t + 1:], y_changed[:, t + 1:])


@pytest.mark.parametrize("name", models.NAMES)
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
    assert rel_err(layer(x[2:3]), y[2:3]) <= 1e-12


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


@pytest.mark.parametrize("name", models.NAMES)
def test_reported_params_count_the_module(name):
    layer = small_layer(name)
    assert layer.num_params() == sum(p.numel() for p in layer.parameters()) > 0
    assert layer.flops(2, 16) > layer.flops(1, 16) > 0


def test_attention_parameter_count_is_within_ten_percent_of_gss_at_dim_512():
    gss = models.build_layer("gss", dim=512, device="meta").num_params()
    attention = models.build_layer("attention", dim=512, device="meta").num_params()
    assert 2.9e6 < gss < 3.1e6
    assert abs(attention - gss) <= 0.10 * gss
    assert models.build_layer("attention", dim=512, device="meta").heads == 8  # head dim 64


@pytest.mark.parametrize("dim,heads", [(512, 8), (200, 2), (130, 1), (96, 1), (32, 1)])
def test_default_heads_split_dim_into_even_heads(dim, heads):
    layer = models.build_layer("attention", dim=dim, device="meta")
    assert layer.heads == heads and (dim // heads) % 2 == 0


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("name", ["gss", "gss-direct"])
def test_low_precision_parameters_run_and_stay_close_to_float32(name, dtype):
    """Parameters in float16/bfloat16 (not autocast): the DSS kernel is computed in complex64, the output
    comes back in the parameters' dtype, and the step mode agrees with the forward."""
    reference = small_layer(name, dtype=torch.float32)
    layer = small_layer(name, dtype=dtype)
    layer.load_state_dict({k: v.to(dtype) for k, v in reference.state_dict().items()})
    x = torch.randn(2, 24, DIM)
    y = layer(x.to(dtype))
    assert y.dtype == dtype
    assert rel_err(y.float(), reference(x)) < 2e-2
    state = layer.init_state(2)
    steps = []
    for t in range(x.shape[1]):
        y_t, state = layer.step(x[:, t].to(dtype), state)
        steps.append(y_t)
    assert torch.stack(steps, 1).dtype == dtype
    assert rel_err(torch.stack(steps, 1).float(), y.float()) < 2e-2


# ---- bad arguments ----

@pytest.mark.parametrize("call,match", [
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
])
def test_bad_arguments_raise_value_error(call, match):
    with pytest.raises(ValueError, match=match):
        call()


@pytest.mark.parametrize("name", models.NAMES)
def test_empty_sequence_raises_value_error(name):
    layer = small_layer(name)
    with pytest.raises(ValueError, match="empty sequence"):
        layer(torch.zeros(2, 0, DIM, dtype=torch.float64))
