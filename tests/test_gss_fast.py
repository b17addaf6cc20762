"""models.gss_fast against models.gss: the same function (outputs and gradients), the same state_dict, a kernel
cache that is never stale, FLOPs as executed, and GSS's recurrence for step / prefill."""

import pytest
import torch

from bench.core.flops import count_flops
from models.gss import DSS, GSS, dss_recurrence_ref, dss_ref
from models.gss_fast import FastDSS, FastGSS, FFTConv, RealKernel
from models.ops import causal_conv_ref, fft_conv, rfft_flops

SMALL = dict(dim=32, dss_kernel_H=16, dss_kernel_N=8, dim_expansion_factor=2)
LENGTHS = (1, 2, 7, 64, 100)


def rel(a, b):
    """max|a - b| / max|b| (0 where both are exactly zero)."""
    return ((a - b).abs().max() / b.abs().max().clamp_min(1e-300)).item()


def pair(*, seed=0, dtype=torch.float32, **options):
    """A reference GSS and a FastGSS holding the same weights."""
    options = {**SMALL, **options}
    torch.manual_seed(seed)
    ref = GSS(dtype=dtype, **options)
    fast = FastGSS(dtype=dtype, **options)
    fast.load_state_dict(ref.state_dict(), strict=True)
    return ref, fast


def grads(model, x):
    """Output, input gradient and parameter gradients of a fixed random loss (not a mean, whose input gradient
    through the residual would be the same constant for both models)."""
    model.zero_grad()
    x = x.detach().clone().requires_grad_(True)
    out = model(x)
    w = torch.randn(out.shape, generator=torch.Generator().manual_seed(1), dtype=out.dtype)
    (out * w).sum().backward()
    return out.detach(), x.grad, {n: p.grad for n, p in model.named_parameters()}


@pytest.mark.parametrize("dtype,out_tol,grad_tol", [(torch.float32, 1e-5, 1e-4), (torch.float64, 1e-12, 1e-10)])
@pytest.mark.parametrize("imag_exp", [True, False])
@pytest.mark.parametrize("seq_len", LENGTHS)
def test_matches_gss(dtype, out_tol, grad_tol, imag_exp, seq_len):
    ref, fast = pair(dss_kernel_lambda_imag_exp=imag_exp, dtype=dtype)
    x = torch.randn(2, seq_len, SMALL["dim"], dtype=dtype)
    out_ref, gx_ref, gp_ref = grads(ref, x)
    out, gx, gp = grads(fast, x)
    assert rel(out, out_ref) < out_tol
    assert rel(gx, gx_ref) < grad_tol
    for name, g in gp.items():
        assert rel(g, gp_ref[name]) < grad_tol, name
    with torch.no_grad():  # the cached path, twice
        assert rel(fast(x), out_ref) < out_tol and rel(fast(x), out_ref) < out_tol


@pytest.mark.parametrize(
    "options",
    [
        dict(dim=64, dss_kernel_H=32, dss_kernel_N=16, dim_expansion_factor=4),
        dict(dim=64, dss_kernel_H=64, dss_kernel_N=8, reverse_seq=True),
    ],
)
def test_matches_gss_dim64(options):
    ref, fast = pair(**options)
    x = torch.randn(3, 50, 64)
    out_ref, gx_ref, gp_ref = grads(ref, x)
    out, gx, gp = grads(fast, x)
    assert rel(out, out_ref) < 1e-5 and rel(gx, gx_ref) < 1e-4
    for name, g in gp.items():
        assert rel(g, gp_ref[name]) < 1e-4, name
    with torch.no_grad():  # the in-place path (GELUs, gate, residual) and the cached spectrum
        assert rel(fast(x), out_ref) < 1e-5 and rel(fast(x), out_ref) < 1e-5


def test_no_grad_path_under_autocast_matches_gss():
    ref, fast = pair()
    x = torch.randn(2, 40, SMALL["dim"])
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        expected, got = ref(x), fast(x)
    assert got.dtype == expected.dtype == torch.float32  # the residual's promotion, as GSS's
    assert rel(got, expected) < 2e-2  # bfloat16 projections: each side rounds its own way


@pytest.mark.parametrize("shape", [(1, 1, 3), (2, 9, 4), (2, 3, 16, 5)])
def test_fft_conv_backward(shape):
    """FFTConv's real-transform backward against the slow convolution's autograd, and by finite differences."""
    torch.manual_seed(0)
    u = torch.randn(*shape, dtype=torch.float64, requires_grad=True)
    K = torch.randn(*shape[-2:], dtype=torch.float64, requires_grad=True)
    gy = torch.randn(*shape, dtype=torch.float64)
    y = FFTConv.apply(u, K)
    gu, gK = torch.autograd.grad(y, (u, K), gy)
    y_ref = causal_conv_ref(u, K)
    gu_ref, gK_ref = torch.autograd.grad(y_ref, (u, K), gy)
    assert rel(y, y_ref) < 1e-12 and rel(gu, gu_ref) < 1e-12 and rel(gK, gK_ref) < 1e-12
    assert torch.autograd.gradcheck(FFTConv.apply, (u, K))
    (gu_only,) = torch.autograd.grad(FFTConv.apply(u, K.detach()), (u,), gy)  # one input needing a grad
    assert rel(gu_only, gu_ref) < 1e-12


def test_matches_gss_after_an_optimizer_step():
    ref, fast = pair()
    x = torch.randn(2, 64, SMALL["dim"])
    with torch.no_grad():
        fast(x)  # fill the cache with the kernel of the weights before the step
    computed = fast.dss.kernel_computations
    for model in (ref, fast):
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
        grads(model, x)
        optimizer.step()
    for (name, p_ref), p in zip(ref.named_parameters(), fast.parameters()):
        assert rel(p, p_ref) < 1e-5, name
    assert not torch.equal(fast.dss.C_real, fast.dss._kernel_cache[1][2])  # the step did change the kernel
    with torch.no_grad():
        out_ref, out = ref(x), fast(x)
    assert fast.dss.kernel_computations == computed + 2  # the grads() call, then the stale cache was dropped
    assert rel(out, out_ref) < 1e-5
    out_ref, gx_ref, gp_ref = grads(ref, x)
    out, gx, gp = grads(fast, x)
    assert rel(out, out_ref) < 1e-5 and rel(gx, gx_ref) < 1e-4
    for name, g in gp.items():
        assert rel(g, gp_ref[name]) < 1e-4, name


@pytest.mark.parametrize("imag_exp", [True, False])
def test_mixer_matches_the_recurrence(imag_exp):
    torch.manual_seed(0)
    dss = FastDSS(dim=16, kernel_N=8, dss_kernel_lambda_imag_exp=imag_exp, dtype=torch.float64)
    x = torch.randn(2, 64, 16, dtype=torch.float64)
    assert rel(dss(x), dss_ref(dss, x)) < 1e-10
    u = torch.randn(2, 64, 16, dtype=torch.float64)
    K = dss.kernel(64)
    assert K.shape == (64, 16)
    impulse = torch.zeros(1, 64, 16, dtype=torch.float64)
    impulse[:, 0] = 1
    assert rel(K, dss_recurrence_ref(impulse, *dss.lambda_and_c())[0]) < 1e-10
    assert rel(K, DSS.kernel(dss, 64)) < 1e-12  # the complex einsum's kernel
    assert rel(fft_conv(u, K), dss_recurrence_ref(u, *dss.lambda_and_c())) < 1e-10


def test_state_dict_loads_both_ways_and_a_seed_initialises_alike():
    ref, fast = pair()
    assert list(ref.state_dict()) == list(fast.state_dict())
    ref.load_state_dict(fast.state_dict(), strict=True)
    torch.manual_seed(3)
    a = GSS(**SMALL)
    torch.manual_seed(3)
    b = FastGSS(**SMALL)
    for (name, p), q in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(p, q), name
    assert isinstance(b.mixer, FastDSS)


def test_only_fft():
    with pytest.raises(ValueError, match="fft"):
        FastGSS(conv_mode="direct", **SMALL)
    with pytest.raises(ValueError, match="fft"):
        FastDSS(dim=16, kernel_N=8, conv_mode="direct", conv_kernel=4)


@pytest.mark.parametrize("batch,seq_len", [(1, 64), (2, 100)])
def test_flops_as_executed(batch, seq_len):
    _, fast = pair()
    H, N = SMALL["dss_kernel_H"], SMALL["dss_kernel_N"]
    x = torch.randn(batch, seq_len, SMALL["dim"])
    counted = count_flops(lambda: fast(x))
    assert counted == pytest.approx(fast.flops(batch, seq_len), abs=4)  # FlopCounterMode rounds each FFT
    with torch.no_grad():
        fast(x)
        cached = count_flops(lambda: fast(x))
    assert cached == pytest.approx(fast.flops(batch, seq_len, cached=True), abs=4)
    kernel = 4 * H * N * seq_len + rfft_flops(2 * seq_len, count=H)  # the real product and the kernel's rfft
    assert fast.flops(batch, seq_len) - fast.flops(batch, seq_len, cached=True) == pytest.approx(kernel)
    assert counted - cached == pytest.approx(kernel, abs=8)
    assert fast.dss.flops(batch, seq_len, cached=True) == pytest.approx(
        GSS(**SMALL).dss.flops(batch, seq_len) - 8 * H * N * seq_len - rfft_flops(2 * seq_len, count=H)
    )


def test_step_and_prefill_match_forward():
    _, fast = pair(dtype=torch.float64)
    x = torch.randn(2, 12, SMALL["dim"], dtype=torch.float64)
    with torch.inference_mode():
        y = fast(x)
        state = fast.init_state(2)
        steps = [fast.step(x[:, t], state)[0] for t in range(12)]
        assert rel(torch.stack(steps, dim=1), y) < 1e-10
        y_prefix, state = fast.prefill(x[:, :5])
        assert rel(y_prefix, y[:, :5]) < 1e-12
        rest = [fast.step(x[:, t], state)[0] for t in range(5, 12)]
        assert rel(torch.stack(rest, dim=1), y[:, 5:]) < 1e-10


def test_real_kernel_backward_by_finite_differences():
    torch.manual_seed(0)
    a = -torch.rand(4, dtype=torch.float64) - 0.1
    b = 3 * torch.randn(4, dtype=torch.float64)
    W = torch.randn(3, 8, dtype=torch.float64)
    inputs = tuple(t.requires_grad_(True) for t in (a, b, W))
    assert torch.autograd.gradcheck(lambda a, b, W: RealKernel.apply(a, b, W, 20), inputs)
    assert torch.autograd.gradcheck(lambda W: RealKernel.apply(a.detach(), b.detach(), W, 20), (W,))  # W alone
    assert torch.autograd.gradcheck(lambda a: RealKernel.apply(a, b.detach(), W.detach(), 20), (a,))  # a alone
